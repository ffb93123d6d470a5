#!/usr/bin/env bash
# Round 83: the compiled decode step's GPU time under other mat-vec shapes (threads per
# workgroup, output columns per workgroup), one role at a time, f16 and f32, Dawn.
set -u
timeout 560 python3 bench/torch_step_sweep.py --backend dawn --out $OUT/step_sweep.json 2>&1 | grep -v "^  "
