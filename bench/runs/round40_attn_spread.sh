#!/usr/bin/env bash
# Round 40 (engine): the decode attention reads its keys by adjacent words (Tuning.attn_spread):
# A/B on both backends and models, then the shape sweep (attention chunk included) with it on.
set -u
timeout 150 python3 bench/sweep_decode.py --ab attn_spread --backend dawn,wgpu --dtype f16 --out $OUT/attn_spread_ab_05b.json 2>&1 | grep -v "^{"
timeout 150 python3 bench/sweep_decode.py --ab attn_spread --backend dawn --dtype f16,q4_0 --preset qwen2.5-1.5b --out $OUT/attn_spread_ab_15b.json 2>&1 | grep -v "^{"
timeout 200 python3 bench/sweep_decode.py --with attn_spread --backend dawn --dtype f16 --out $OUT/attn_spread_sweep_05b.json 2>&1 | grep -v "^{"
