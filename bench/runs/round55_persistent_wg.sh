#!/usr/bin/env bash
# Round 55: the persistent step with larger workgroups (one per SM: more loads in flight each).
set -u
for wg in 256 512 1024; do
  timeout 150 python3 bench/probe_persistent_decode.py --backend dawn --wg $wg --groups 132 --plain --reps 30 \
    --out $OUT/probe_persistent_wg${wg}_dawn.json 2>&1 | grep -v "^#" | grep -v Warning | grep -v np.exp | grep -v " err " \
    | sed "s/^/wg=$wg /"
done
