#!/usr/bin/env bash
# Round 12: prompt attention over blocks of 16 query tokens with key/value chunks staged once per
# block (round 11's matmul shapes); pp512 and the prompt's per-kernel profile.
set -u
B="timeout 250 python3 -m webgpu_llm.cli.main bench --reps 3 --n-gen 32 --profile"
$B --preset qwen2.5-0.5b --dtype f16,f32,q4_0 --backend dawn,wgpu --json --out $OUT/r12_05b.json > /dev/null 2>&1
$B --preset qwen2.5-1.5b --dtype f16,f32 --backend dawn --json --out $OUT/r12_15b.json > /dev/null 2>&1
python3 - <<'PY'
import json, os, glob
for f in sorted(glob.glob(os.environ["OUT"] + "/r12_*.json")):
    d = json.load(open(f))
    for r in d["engine"]:
        print(r["model"], r["backend"], "tg", round(r["tg_tok_s"]), "pp", round(r.get("pp_tok_s", 0)))
        p = r.get("profile_prefill")
        if p:
            print("   prompt layers", round(p["gpu_us"]), "us", {k["kernel"]: round(k["us"]) for k in p["kernels"]})
PY
