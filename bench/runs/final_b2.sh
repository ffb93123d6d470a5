#!/usr/bin/env bash
# Final part B2: the full characterization (both backends, CUDA reference, ablations on the
# Qwen2.5-0.5B shape in f32/f16/q8_0/q4_0) and the PyTorch webgpu device's generate speed.
set -u
timeout 330 python3 -m webgpu_llm.cli.main characterize --preset qwen2.5-0.5b --out $OUT 2>&1 | tail -4
timeout 230 python3 bench/torch_generate.py --backend dawn --out $OUT/torch_generate.json 2>&1 | tail -12
