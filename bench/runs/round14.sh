#!/usr/bin/env bash
# Round 14: the decode shape sweep again with int8 activations on (q8_0/q4_0) and 64-thread
# workgroups back in the candidates (more workgroups for the small QKV/O matrices).
set -u
S="timeout 280 python3 bench/sweep_decode.py"
$S --preset qwen2.5-0.5b --dtype f16,q8_0,q4_0 --backend dawn,wgpu --out $OUT/sweep14a.json 2>&1 | grep -v '^{'
python3 - <<'PY'
import json, os, glob
for f in sorted(glob.glob(os.environ["OUT"] + "/sweep14*.json")):
    for r in json.load(open(f)):
        print(r["backend"], r["preset"], r["dtype"], r["tuning"], r["attn_chunk"], round(r["step_gpu_us"]), "us", round(r["tg64_tok_s"]), "tok/s")
PY
