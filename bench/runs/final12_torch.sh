#!/usr/bin/env bash
# Runs 3 and 4 of the torch device's table at the tenth session's last code (3e2acb7, the same
# torch code as final11's 90ef779): transformers generate on a Qwen2.5-0.5B-shaped model, Dawn,
# f16 and f32, plain eager, fused layers, compiled; two processes in one call.
set -u
for i in 1 2; do
  timeout 280 python3 bench/torch_generate.py --backend dawn --runs 3 --eager-step-gpu --out $OUT/torch_generate10_$((i + 2)).json 2>&1 \
    | grep -E "^\| f|eager step" | sed "s/^/$((i + 2)) /"
done
