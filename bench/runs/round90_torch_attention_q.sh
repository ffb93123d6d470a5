#!/usr/bin/env bash
# Round 90: the torch attention reads its threads' share of q instead of staging it (one barrier
# and one round of loads fewer); the attention tests on this GPU, a greedy check against the
# CPU on Dawn, then before (d1cdf6c, bench/_before, not committed) / after, compiled f16 and
# f32, 5 runs.
set -u
bash bench/runs/torch_gpu_checks.sh
timeout 330 python3 bench/torch_ab.py --before bench/_before --repeat 1 --out-dir $OUT -- \
  --backend dawn --dtypes f16,f32 --modes compiled --runs 5 2>&1 | tail -6
