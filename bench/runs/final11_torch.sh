#!/usr/bin/env bash
# The torch device's table at the tenth session's last code (90ef779): transformers generate on
# a Qwen2.5-0.5B-shaped model, Dawn, f16 and f32, plain eager, fused layers, compiled; twice,
# in two processes (the host's CPU moves these figures by +-20 % from minute to minute).
set -u
for i in 1 2; do
  timeout 280 python3 bench/torch_generate.py --backend dawn --runs 3 --eager-step-gpu --out $OUT/torch_generate10_$i.json 2>&1 \
    | grep -E "^\| f|eager step" | sed "s/^/$i /"
done
