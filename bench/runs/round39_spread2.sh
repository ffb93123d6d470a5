#!/usr/bin/env bash
# Round 39b (engine): spread words for f32 too; the shape sweep with spread on for the 1.5B,
# for wgpu-native and for f32 (the default shapes must serve every model).
set -u
timeout 120 python3 bench/sweep_decode.py --ab spread --backend dawn --dtype f32 --out $OUT/spread_ab_05b_f32.json 2>&1 | grep -v "^{"
timeout 200 python3 bench/sweep_decode.py --with spread --backend dawn --dtype f16 --preset qwen2.5-1.5b --out $OUT/spread_sweep_15b.json 2>&1 | grep -v "^{"
timeout 150 python3 bench/sweep_decode.py --with spread --backend wgpu --dtype f16 --out $OUT/spread_sweep_05b_wgpu.json 2>&1 | grep -v "^{"
timeout 150 python3 bench/sweep_decode.py --with spread --backend dawn --dtype f32 --out $OUT/spread_sweep_05b_f32.json 2>&1 | grep -v "^{"
