#!/usr/bin/env bash
# Round 25: eager launches per submit again, alternating settings (ABAB) with more tokens and runs.
set -u
timeout 560 python3 bench/torch_generate.py --backend dawn --dtypes f32 --modes eager --runs 5 --eager-new-tokens 64 --max-pending 2048,256,2048,256,2048,256 --out $OUT/torch_eager_overlap.json 2>&1 | grep -v Warning | tail -9
