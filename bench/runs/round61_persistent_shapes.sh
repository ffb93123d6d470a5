#!/usr/bin/env bash
# Round 61: the mat-vec shapes (threads per row pair, units in flight) swept again for the
# persistent decode layers (264 workgroups: two per SM; 396 do not all fit), 0.5B f16 on Dawn.
set -u
timeout 500 python3 bench/sweep_decode.py --preset qwen2.5-0.5b --dtype f16 --backend dawn --with persist=264 \
  --out $OUT/round61_persistent_shapes.json 2>&1 | grep -v Warning | grep -v '^{'
