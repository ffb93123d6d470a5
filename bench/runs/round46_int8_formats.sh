#!/usr/bin/env bash
# Round 46 (engine): the int8 path (dot4I8Packed) for q4_1, q5_0, q5_1 and q4_k: A/B against
# the float path (Tuning.int8 off/on) on the 0.5B (32-blocks) and the 1.5B (q4_k needs rows
# of 256), Dawn.
set -u
timeout 200 python3 bench/sweep_decode.py --ab int8 --backend dawn --dtype q4_1,q5_0,q5_1 --out $OUT/int8_formats_05b.json 2>&1 | grep -v "^{"
timeout 200 python3 bench/sweep_decode.py --ab int8 --backend dawn --dtype q4_k,q5_0 --preset qwen2.5-1.5b --out $OUT/int8_formats_15b.json 2>&1 | grep -v "^{"
