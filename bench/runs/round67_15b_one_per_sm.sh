#!/usr/bin/env bash
# Round 67: the 1.5B's layers fit one persistent workgroup per SM only (round 62); can more
# loads in flight per thread make up for the lost occupancy? Shapes swept at persist=132.
set -u
timeout 560 python3 bench/sweep_decode.py --preset qwen2.5-1.5b --dtype f16 --backend dawn --with persist=132 \
  --out $OUT/round67_15b_one_per_sm.json 2>&1 | grep -v Warning | grep -v '^{'
