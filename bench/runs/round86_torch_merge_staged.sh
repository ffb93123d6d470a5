#!/usr/bin/env bash
# Round 86: round 85 again with the merge in O's prologue staged for latency (each thread
# requests its values first, the first 14 threads compute the heads' split weights meanwhile,
# one barrier). bench/_before holds a411bef's package (not committed). Compiled f16 and f32,
# before/after alternated twice, 5 runs each.
set -u
timeout 560 python3 bench/torch_ab.py --before bench/_before --repeat 2 --out-dir $OUT -- \
  --backend dawn --dtypes f16,f32 --modes compiled --runs 5 2>&1 | tail -10
