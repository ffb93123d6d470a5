#!/usr/bin/env bash
# Round 52 (engine): `Tuning.early` as a count of units: the float mat-vecs request their first
# N units' weight words before the prologue (round 51: the first one). Correctness on the GPU
# first, then A/B (alternated twice, same call): 0.5B f16/f32 on Dawn against N = 1, and
# wgpu-native and the 1.5B (where N = 1 lost) against N = 0.
set -u
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_linear.py -k "early" 2>&1 | tail -1
S="python3 bench/sweep_decode.py"
timeout 90 $S --ab early=1,2 --backend dawn --dtype f16 --out $OUT/round52_early12_05b_f16.json 2>&1 | grep -v "^{"
timeout 90 $S --ab early=1,4 --backend dawn --dtype f16 --out $OUT/round52_early14_05b_f16.json 2>&1 | grep -v "^{"
timeout 90 $S --ab early=1,2 --backend dawn --dtype f32 --out $OUT/round52_early12_05b_f32.json 2>&1 | grep -v "^{"
timeout 90 $S --ab early=0,2 --backend wgpu --dtype f16 --out $OUT/round52_early02_05b_wgpu.json 2>&1 | grep -v "^{"
timeout 120 $S --ab early=0,2 --backend dawn --dtype f16 --preset qwen2.5-1.5b --out $OUT/round52_early02_15b.json 2>&1 | grep -v "^{"
