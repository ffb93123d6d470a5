#!/usr/bin/env bash
# Round 79: eager nn.Linear of one row through the mat-vec compiled graphs use (fused_linear)
# instead of the generic strided gemv. bench/_before holds 2b9bfc1's package (not committed).
# Eager and fused, f16 and f32, with one eager decode forward's GPU time by kernel; before,
# after, before, after.
set -u
for i in 1 2; do
  for side in before after; do
    pp=""; [ $side = before ] && pp="$PWD/bench/_before:"
    PYTHONPATH=$pp${PYTHONPATH:-} timeout 140 python3 bench/torch_generate.py --backend dawn --modes eager,fused --runs 3 \
      --eager-step-gpu --out $OUT/${side}_$i.json 2>&1 | grep -E "^\| f|eager step" | sed "s/^/$side $i /"
  done
done
