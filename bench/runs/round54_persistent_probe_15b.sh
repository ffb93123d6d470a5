#!/usr/bin/env bash
# Round 54 on the 1.5B's shapes (half its layers if the whole does not fit one binding).
set -u
timeout 250 python3 bench/probe_persistent_decode.py --backend dawn --shape qwen2.5-1.5b --groups 132 --plain --reps 30 \
  --out $OUT/probe_persistent_15b_dawn.json 2>&1 | grep -v "^#" | grep -v Warning | grep -v np.exp | grep -v " err " \
  || true
if [ ! -s $OUT/probe_persistent_15b_dawn.json ]; then
  timeout 200 python3 bench/probe_persistent_decode.py --backend dawn --shape qwen2.5-1.5b --layers 14 --groups 132 --plain \
    --reps 30 --out $OUT/probe_persistent_15b_14l_dawn.json 2>&1 | grep -v Warning | grep -v np.exp | grep -v " err "
fi
