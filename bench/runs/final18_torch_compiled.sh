#!/usr/bin/env bash
# Fourteenth session's last code: compiled decode tok/s (transformers generate, static cache,
# random weights) on the Qwen2.5-0.5B and 1.5B shapes, f16 and f32, one process each. Dawn.
set -u
for m in qwen2.5-0.5b qwen2.5-1.5b; do
  timeout 280 python3 bench/torch_generate.py --backend dawn --model $m --modes compiled --dtypes f16,f32 --runs 3 \
    --out $OUT/table_$m.json 2>&1 | grep -E "^\| "
done
