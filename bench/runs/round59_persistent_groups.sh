#!/usr/bin/env bash
# Round 59: fewer persistent workgroups than SMs (a cheaper barrier, fewer loads in flight).
set -u
timeout 280 python3 bench/probe_persistent_decode.py --backend dawn --past 80 --groups 66,100,132 --plain --reps 30 \
  --out $OUT/probe_persistent_model_groups_dawn.json 2>&1 | grep -v "^#" | grep -v Warning | grep -v np.exp \
  | grep -v " err " | grep -v "multi G="
