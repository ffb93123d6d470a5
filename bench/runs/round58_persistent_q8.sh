#!/usr/bin/env bash
# Round 58: the persistent model step with int8 weights (q8_0's bytes): where bytes weigh
# less, the barriers' share, and so the persistent form's saving, should be larger.
set -u
timeout 250 python3 bench/probe_persistent_decode.py --backend dawn --dtype q8 --past 80 --groups 132 --plain --reps 30 \
  --profile --out $OUT/probe_persistent_model_q8_dawn.json 2>&1 | grep -v "^#" | grep -v Warning | grep -v np.exp | grep -v " err "
timeout 200 python3 bench/probe_persistent_decode.py --backend dawn --dtype q8 --groups 132 --plain --reps 30 \
  --out $OUT/probe_persistent_q8_dawn.json 2>&1 | grep -v "^#" | grep -v Warning | grep -v np.exp | grep -v " err "
