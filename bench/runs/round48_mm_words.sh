#!/usr/bin/env bash
# Round 48 (engine): the prompt matmul of 16-bit weights loads its weight tile a 16-byte word
# per thread (all 256 threads) instead of a 64-byte unit per thread (64 threads): A/B of the
# 512-token prompt's GPU time and pp512, both models, both backends.
set -u
timeout 250 python3 bench/sweep_decode.py --ab mm_words --prefill --backend dawn,wgpu --dtype f16 --out $OUT/mm_words_05b.json 2>&1 | grep -v "^{"
timeout 250 python3 bench/sweep_decode.py --ab mm_words --prefill --backend dawn --dtype f16 --preset qwen2.5-1.5b --out $OUT/mm_words_15b.json 2>&1 | grep -v "^{"
