#!/usr/bin/env bash
# Round 57: round 54's probe with the model's step: real attention over 80 cached positions
# (the middle of tg128's contexts), residual adds, RMS only before QKV, gate/up and the LM head.
set -u
for b in dawn wgpu; do
  timeout 220 python3 bench/probe_persistent_decode.py --backend $b --past 80 --groups 132 --plain --reps 30 --profile \
    --out $OUT/probe_persistent_model_$b.json 2>&1 | grep -v "^#" | grep -v Warning | grep -v np.exp | grep -v " err "
done
