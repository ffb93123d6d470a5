#!/usr/bin/env bash
# Round 91: mat-vecs with a fused RMSNorm request the norm's weights with x (one round of loads
# in the staging, not two). bench/_before holds 16f7e46's package (not committed). Compiled f16
# and f32, before/after, 5 runs; the step's GPU time is the figure.
set -u
timeout 330 python3 bench/torch_ab.py --before bench/_before --repeat 1 --out-dir $OUT -- \
  --backend dawn --dtypes f16,f32 --modes compiled --runs 5 2>&1 | tail -6
