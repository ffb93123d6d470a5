#!/usr/bin/env bash
# Round 43 (engine): decode of the other weight formats on the 0.5B shape after rounds 39-42
# (bf16 spreads like f16; the 32-block and k-quant formats read as before), Dawn, tg128 only.
set -u
timeout 280 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype bf16,q4_1,q5_0,q5_1,q4_k,q5_k,q6_k \
  --backend dawn --reps 3 --n-pp 0 --out $OUT/formats_05b.json 2>&1 | grep -E "^\| [a-z]"
