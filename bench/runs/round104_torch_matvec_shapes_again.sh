#!/usr/bin/env bash
# Round 104: round 83's sweep again, now that a setting reaches every role's kernel
# (fused_linear.set_shapes clears the launch plans; round 83's planned mat-vecs -- O, gate/up,
# down, LM head -- repeated the default kernels). The compiled decode step's GPU time under
# other (threads per workgroup, output columns per workgroup), one role at a time, Dawn.
set -u
timeout 580 python3 bench/torch_step_sweep.py --backend dawn --out $OUT/step_sweep.json 2>&1 | grep -v "^  "
