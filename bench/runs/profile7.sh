#!/usr/bin/env bash
# Where the decode step's time goes in every cell that misses its target (the 0.5B f16 profile
# is final6's): per-kernel GPU time of a decode step, Dawn.
set -u
for cell in "qwen2.5-0.5b q8_0" "qwen2.5-0.5b q4_0" "qwen2.5-1.5b f16" "qwen2.5-1.5b q8_0" "qwen2.5-1.5b q4_0"; do
  set -- $cell
  timeout 110 python3 -m webgpu_llm.cli.main bench --preset $1 --dtype $2 --backend dawn --profile --n-pp 0 --reps 3 \
    --out $OUT/profile7_${1}_$2.json 2>&1 | tail -12
done
