#!/usr/bin/env bash
# Round 85: the compiled decode step with the attention's split merge folded into the output
# projection (attention_linear: -24 dispatches a token). bench/_before holds a411bef's package
# (not committed). Compiled f16 and f32, before/after alternated twice, 5 runs each.
set -u
timeout 560 python3 bench/torch_ab.py --before bench/_before --repeat 2 --out-dir $OUT -- \
  --backend dawn --dtypes f16,f32 --modes compiled --runs 5 2>&1 | tail -20
