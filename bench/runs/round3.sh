#!/usr/bin/env bash
# Round 3: the same sweeps after the mat-vec rewrite (no workgroup-memory prologue, RMSNorm
# folded into the reduction, subgroupAdd), with a per-kernel profile of the best shapes.
set -u
S="timeout 150 python3 bench/sweep_decode.py"
$S --preset qwen2.5-0.5b --dtype f16,q4_0 --backend dawn,wgpu --out $OUT/sweep3.json 2>&1 | grep -v '^{'
python3 - <<'PY'
import json, os
for r in json.load(open(os.environ["OUT"] + "/sweep3.json")):
    print(r["backend"], r["dtype"], r["tuning"], r["attn_chunk"], round(r["step_gpu_us"]), "us", round(r["tg64_tok_s"]), "tok/s")
    print("   ", {k: round(v) for k, v in sorted(r["profile_us"].items(), key=lambda kv: -kv[1])})
PY
