#!/usr/bin/env bash
# Round 56: the persistent step's barrier with waiters spinning on a flag the last arriver raises.
set -u
for b in dawn wgpu; do
  timeout 200 python3 bench/probe_persistent_decode.py --backend $b --groups 132 --plain --flag --reps 30 \
    --out $OUT/probe_persistent_flag_$b.json 2>&1 | grep -v "^#" | grep -v Warning | grep -v np.exp | grep -v " err "
done
