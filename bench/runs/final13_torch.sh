#!/usr/bin/env bash
# Eleventh session's table: the session's first commit (a411bef, in bench/_before, not
# committed) against its last, compiled f16 and f32, then the whole table (eager, fused
# layers, compiled) at the last commit.
set -u
timeout 260 python3 bench/torch_ab.py --before bench/_before --repeat 1 --out-dir $OUT -- \
  --backend dawn --dtypes f16,f32 --modes compiled --runs 5 2>&1 | tail -6
timeout 300 python3 bench/torch_generate.py --backend dawn --runs 3 --out $OUT/table.json 2>&1 | grep -E "^\| f|^\| dtype"
