#!/usr/bin/env bash
# Round 54: a whole 0.5B-shaped decode step (its mat-vec chain, f16 weights) as one persistent
# dispatch with grid barriers, against one dispatch per stage (bench/probe_persistent_decode.py).
set -u
timeout 280 python3 bench/probe_persistent_decode.py --backend dawn --groups 132,264 --plain --reps 30 --profile \
  --out $OUT/probe_persistent_dawn.json 2>&1 | grep -v "^#"
timeout 200 python3 bench/probe_persistent_decode.py --backend wgpu --groups 132 --plain --reps 30 \
  --out $OUT/probe_persistent_wgpu.json 2>&1 | grep -v "^#"
