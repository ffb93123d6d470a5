#!/usr/bin/env bash
# Round 89: mat-vecs with a staged x (RMSNorm, or the attention merge) request their weight
# units before the staging (fused_linear.EARLY). bench/_before holds e09e573's package (not
# committed). Compiled f16 and f32, before/after, 5 runs; the step's GPU time is the figure.
set -u
timeout 330 python3 bench/torch_ab.py --before bench/_before --repeat 1 --out-dir $OUT -- \
  --backend dawn --dtypes f16,f32 --modes compiled --runs 5 2>&1 | tail -6
