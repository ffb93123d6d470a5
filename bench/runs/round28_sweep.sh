#!/usr/bin/env bash
# Round 28: the shape sweep (128/256 threads per row pair among the candidates) on the int8 path
# (0.5B q4_0) and on the 1.5B's float path.
set -u
timeout 280 python3 bench/sweep_decode.py --preset qwen2.5-0.5b --dtype q4_0 --backend dawn --out $OUT/sweep28_05b_q4_0.json 2>&1 | grep -v '^{'
timeout 300 python3 bench/sweep_decode.py --preset qwen2.5-1.5b --dtype f16 --backend dawn --out $OUT/sweep28_15b_f16.json 2>&1 | grep -v '^{'
