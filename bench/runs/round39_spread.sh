#!/usr/bin/env bash
# Round 39 (engine): 16-bit weights read by adjacent words (Tuning.spread): A/B with the
# default shapes on both backends and both model sizes, then the shape sweep with it on.
set -u
timeout 150 python3 bench/sweep_decode.py --ab spread --backend dawn,wgpu --dtype f16 --out $OUT/spread_ab_05b.json 2>&1 | grep -v "^{"
timeout 150 python3 bench/sweep_decode.py --ab spread --backend dawn --dtype f16 --preset qwen2.5-1.5b --out $OUT/spread_ab_15b.json 2>&1 | grep -v "^{"
timeout 200 python3 bench/sweep_decode.py --with spread --backend dawn --dtype f16 --out $OUT/spread_sweep_05b.json 2>&1 | grep -v "^{"
