#!/usr/bin/env bash
# Round 41 (engine): q8_0 on the int8 path read by half-units, adjacent threads on adjacent
# words (Tuning.spread reaches the int8 path): A/B on both backends and models, then the shape
# sweep with it on.
set -u
timeout 150 python3 bench/sweep_decode.py --ab spread --backend dawn,wgpu --dtype q8_0 --out $OUT/q8_half_ab_05b.json 2>&1 | grep -v "^{"
timeout 150 python3 bench/sweep_decode.py --ab spread --backend dawn --dtype q8_0 --preset qwen2.5-1.5b --out $OUT/q8_half_ab_15b.json 2>&1 | grep -v "^{"
timeout 200 python3 bench/sweep_decode.py --backend dawn --dtype q8_0 --out $OUT/q8_half_sweep_05b.json 2>&1 | grep -v "^{"
timeout 200 python3 bench/sweep_decode.py --backend dawn --dtype q8_0 --preset qwen2.5-1.5b --out $OUT/q8_half_sweep_15b.json 2>&1 | grep -v "^{"
