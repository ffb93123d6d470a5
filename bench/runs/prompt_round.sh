#!/usr/bin/env bash
# The prompt-path rounds (9, 10, 12): tg and pp512 with the per-kernel profiles.
#   bench/runs/prompt_round.sh TAG "0.5B DTYPES" "1.5B DTYPES"
set -u
tag=$1
B="timeout 250 python3 -m webgpu_llm.cli.main bench --reps 3 --n-gen 32 --profile"
$B --preset qwen2.5-0.5b --dtype "$2" --backend dawn,wgpu --json --out $OUT/${tag}_05b.json > /dev/null 2>&1
$B --preset qwen2.5-1.5b --dtype "$3" --backend dawn --json --out $OUT/${tag}_15b.json > /dev/null 2>&1
TAG=$tag python3 - <<'PY'
import json, os, glob
for f in sorted(glob.glob(os.environ["OUT"] + f"/{os.environ['TAG']}_*.json")):
    for r in json.load(open(f))["engine"]:
        print(r["model"], r["backend"], "tg", round(r["tg_tok_s"]), "pp", round(r.get("pp_tok_s", 0)))
        p = r.get("profile_prefill")
        if p:
            print("   prompt layers", round(p["gpu_us"]), "us", {k["kernel"]: round(k["us"]) for k in p["kernels"]})
PY
