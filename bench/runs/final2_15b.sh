#!/usr/bin/env bash
# Final table, second session: the 1.5B engine rows, then transformers generate on the torch
# `webgpu` device (0.5B shape, Dawn, eager and compiled, f32 and f16).
set -u
timeout 300 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-1.5b --dtype f16,q8_0,q4_0,f32 --backend dawn,wgpu --reps 5 --out $OUT/final2_qwen2.5-1.5b.json 2>&1 | grep -E "^\| [a-z]"
timeout 260 python3 bench/torch_generate.py --backend dawn --out $OUT/torch_generate2.json 2>&1 | tail -12
