#!/usr/bin/env bash
# Round 8: mat-vec loads issued `ilp` units at a time, both
# rows unconditionally (clamped), swept per role; the isolated kernels timed beside it.
set -u
timeout 150 python3 bench/tune_matvec.py --preset qwen2.5-0.5b --dtype f16,q4_0 --backend dawn --out $OUT/tune8.json 2>&1 | cut -c1-60
S="timeout 200 python3 bench/sweep_decode.py"
$S --preset qwen2.5-0.5b --dtype f16,q4_0 --backend dawn,wgpu --out $OUT/sweep8a.json 2>&1 | grep -v '^{'
python3 - <<'PY'
import json, os, glob
for f in sorted(glob.glob(os.environ["OUT"] + "/sweep8*.json")):
    for r in json.load(open(f)):
        print(r["backend"], r["preset"], r["dtype"], r["tuning"], r["attn_chunk"], round(r["step_gpu_us"]), "us", round(r["tg64_tok_s"]), "tok/s")
        print("   ", {k: round(v) for k, v in sorted(r["profile_us"].items(), key=lambda kv: -kv[1])})
PY
