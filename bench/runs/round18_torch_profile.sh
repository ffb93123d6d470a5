#!/usr/bin/env bash
# Round 18: where the host time of transformers' generate on the webgpu device goes (cProfile).
set -u
timeout 500 python3 bench/torch_generate.py --backend dawn --dtypes f16 --runs 3 --out $OUT/torch_profile.json --profile $OUT/prof 2>&1 | grep -v Warning
