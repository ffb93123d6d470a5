#!/usr/bin/env bash
# Round 45 (engine): int8 mat-vecs with a plain input (down) quantize x from memory instead of
# staging it first (Tuning.int8_direct): the 1.5B's down (k = 8960) then fits the int8 path.
# A/B on both models for q8_0/q4_0, then the down shape swept with it on.
set -u
timeout 200 python3 bench/sweep_decode.py --ab int8_direct --backend dawn --dtype q8_0,q4_0 --preset qwen2.5-1.5b --out $OUT/int8_direct_ab_15b.json 2>&1 | grep -v "^{"
timeout 200 python3 bench/sweep_decode.py --ab int8_direct --backend dawn,wgpu --dtype q8_0,q4_0 --out $OUT/int8_direct_ab_05b.json 2>&1 | grep -v "^{"
timeout 250 python3 bench/sweep_decode.py --with int8_direct --backend dawn --dtype q8_0,q4_0 --preset qwen2.5-1.5b --out $OUT/int8_direct_sweep_15b.json 2>&1 | grep -v "^{"
