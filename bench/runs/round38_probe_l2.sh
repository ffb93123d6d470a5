#!/usr/bin/env bash
# Round 38 (engine): ceiling of an L2 prefetch of the weights: each decode kernel's cost cold
# (omitted from the step) against run a second time right after itself (weights in L2).
set -u
for b in dawn wgpu; do
  timeout 200 python3 bench/probe_l2_warm.py --backend $b --dtype f16 --out $OUT/probe_l2_${b}_f16.json
done
timeout 200 python3 bench/probe_l2_warm.py --backend dawn --dtype q4_0 --out $OUT/probe_l2_dawn_q4_0.json
