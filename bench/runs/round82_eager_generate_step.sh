#!/usr/bin/env bash
# Round 82: why plain eager f16 runs ~5 ms a token slower than f32 in generate while the host's
# own work differs by ~1.5 ms (rounds 76-78). --eager-step-gpu now records a decode forward
# inside generate (generate's own mask and dynamic cache), f32 and f16, eager and fused.
set -u
timeout 200 python3 bench/torch_generate.py --backend dawn --modes eager,fused --runs 3 --eager-step-gpu \
  --out $OUT/eager_generate_step.json 2>&1 | grep -E "^\| f|eager step"
