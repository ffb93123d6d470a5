#!/usr/bin/env bash
# Round 5: unrolled attention loads, mat-vec with 2 units in flight per thread (swept).
set -u
S="timeout 150 python3 bench/sweep_decode.py"
$S --preset qwen2.5-0.5b --dtype f16,q4_0 --backend dawn,wgpu --out $OUT/sweep5.json 2>&1 | grep -v '^{'
python3 - <<'PY'
import json, os
for r in json.load(open(os.environ["OUT"] + "/sweep5.json")):
    print(r["backend"], r["dtype"], r["tuning"], r["attn_chunk"], round(r["step_gpu_us"]), "us", round(r["tg64_tok_s"]), "tok/s")
    print("   ", {k: round(v) for k, v in sorted(r["profile_us"].items(), key=lambda kv: -kv[1])})
PY
