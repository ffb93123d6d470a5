#!/usr/bin/env bash
# Eleventh session's last code (rounds 85-89): the whole torch table twice in one call
# (two processes), decode tok/s of eager, fused layers and compiled, f32 and f16.
set -u
for i in 1 2; do
  timeout 280 python3 bench/torch_generate.py --backend dawn --runs 3 --out $OUT/table_$i.json 2>&1 \
    | grep -E "^\| f" | sed "s/^/run $i /"
done
