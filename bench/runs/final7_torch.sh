#!/usr/bin/env bash
# The torch device's table at the seventh session's code: transformers generate on a
# Qwen2.5-0.5B-shaped model, Dawn, f16 and f32, plain eager, eager with fused layers, compiled.
set -u
timeout 400 python3 bench/torch_generate.py --backend dawn --runs 3 --out $OUT/torch_generate7.json 2>&1 | grep -E "^\| |fused layers"
