#!/usr/bin/env bash
# Round 87: the torch attention kernel requests a chunk's values, its keys' mask and the new
# token's key and value before the first barrier, and takes the chunk's max and sum with
# subgroup reductions. First the attention tests on this GPU (its subgroups take the new
# path, which llvmpipe's narrow ones do not), then before (2dfdc6b, bench/_before, not
# committed) / after, compiled f16 and f32, 5 runs.
set -u
bash bench/runs/torch_gpu_checks.sh
timeout 330 python3 bench/torch_ab.py --before bench/_before --repeat 1 --out-dir $OUT -- \
  --backend dawn --dtypes f16,f32 --modes compiled --runs 5 2>&1 | tail -6
