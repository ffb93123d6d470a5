#!/usr/bin/env bash
# Round 6: software-pipelined mat-vec (next unit's weights requested before the current is
# used, first unit before the prologue barrier), swept from the round-5 defaults.
set -u
S="timeout 170 python3 bench/sweep_decode.py"
$S --preset qwen2.5-0.5b --dtype f16,q4_0 --backend dawn,wgpu --out $OUT/sweep6a.json 2>&1 | grep -v '^{'
$S --preset qwen2.5-1.5b --dtype f16 --backend dawn --out $OUT/sweep6b.json 2>&1 | grep -v '^{'
python3 - <<'PY'
import json, os, glob
for f in sorted(glob.glob(os.environ["OUT"] + "/sweep6*.json")):
    for r in json.load(open(f)):
        print(r["backend"], r["preset"], r["dtype"], r["tuning"], r["attn_chunk"], round(r["step_gpu_us"]), "us", round(r["tg64_tok_s"]), "tok/s")
        print("   ", {k: round(v) for k, v in sorted(r["profile_us"].items(), key=lambda kv: -kv[1])})
PY
