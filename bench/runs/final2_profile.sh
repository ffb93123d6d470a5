#!/usr/bin/env bash
# Second session: decode and prompt profiles of the 0.5B q4_0 (int8 path) and f16, and the
# SmolLM2-135M shape row (q4_1) after the prompt-path rounds.
set -u
W="timeout 250 python3 -m webgpu_llm.cli.main"
$W bench --preset qwen2.5-0.5b --dtype q4_0,f16 --backend dawn --reps 3 --profile --json --out $OUT/profile2_05b.json > /dev/null 2>&1
$W bench --preset smollm2-135m --dtype q4_1 --backend dawn,wgpu --reps 5 --out $OUT/smollm2_shape2.json 2>&1 | grep -E "^\| [a-z]"
python3 - <<'PY'
import json, os
for r in json.load(open(os.environ["OUT"] + "/profile2_05b.json"))["engine"]:
    p = r["profile"]
    print(r["model"], "tg", round(r["tg_tok_s"]), "GPU", round(p["gpu_us"]), "us/token, encode", round(p["cpu_encode_us"]), "us")
    print("   ", {k["kernel"]: round(k["us"]) for k in p["kernels"]})
PY
