#!/usr/bin/env bash
# Round 84: how much of the compiled decode step's GPU time reaches the token time? The step is
# made longer by 3 more runs of its LM head (same logits written again), alternated with the
# plain step twice, f16 and f32, Dawn, 128 new tokens, 5 runs each.
set -u
timeout 560 python3 bench/torch_generate.py --backend dawn --modes compiled --runs 5 --pad-step 0,3 --repeat 2 \
  --out $OUT/pad_step.json 2>&1 | grep -E "pad|padded|^\| f"
