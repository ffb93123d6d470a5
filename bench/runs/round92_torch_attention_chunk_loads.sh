#!/usr/bin/env bash
# Round 92: the torch attention requests its first chunk's keys, values and mask before q is
# staged (and each next chunk's at the end of the one before). The GPU-side checks first, then
# before (33f83f3, bench/_before, not committed) / after, compiled f16 and f32, 5 runs.
set -u
bash bench/runs/torch_gpu_checks.sh
timeout 330 python3 bench/torch_ab.py --before bench/_before --repeat 1 --out-dir $OUT -- \
  --backend dawn --dtypes f16,f32 --modes compiled --runs 5 2>&1 | tail -6
