#!/usr/bin/env bash
# Round 47 (engine): the int8 path for q5_k and q6_k (the rest of a Q4_K_M file's types): A/B
# against the float path on the 1.5B (k-quants need rows of 256), Dawn.
set -u
timeout 200 python3 bench/sweep_decode.py --ab int8 --backend dawn --dtype q5_k,q6_k --preset qwen2.5-1.5b --out $OUT/int8_kquants_15b.json 2>&1 | grep -v "^{"
