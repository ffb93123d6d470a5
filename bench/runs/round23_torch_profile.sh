#!/usr/bin/env bash
# Round 23: host profile of compiled decode after rounds 20-22.
set -u
timeout 250 python3 bench/torch_generate.py --backend dawn --dtypes f16 --modes compiled --runs 3 --out $OUT/torch_profile23.json --profile $OUT/prof23 2>&1 | grep -v Warning | tail -2
