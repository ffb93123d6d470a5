#!/usr/bin/env bash
# The torch device's table at the tenth session's code (rounds 75-78: the cheaper eager launch
# path, Dawn without command validation), against the ninth session's (62cd4fb, in
# bench/_before, not committed) on the same host: before, after, after again. transformers
# generate on a Qwen2.5-0.5B-shaped model, Dawn, f16 and f32, plain eager, fused layers, compiled.
set -u
timeout 480 python3 bench/torch_ab.py --before bench/_before --repeat 1 --timeout 220 --out-dir $OUT -- \
  --backend dawn --runs 3 2>&1 | grep -v "^=="
timeout 220 python3 bench/torch_generate.py --backend dawn --runs 3 --out $OUT/after_again.json 2>&1 | grep -E "^\| f"
