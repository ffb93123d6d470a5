#!/usr/bin/env bash
# Round 38: where a token goes now (after rounds 30-37): cProfile of one generate per cell,
# compiled f16/f32 (128 tokens) and eager f16 (32 tokens), Dawn.
set -u
timeout 400 python3 bench/torch_generate.py --backend dawn --dtypes f16,f32 --modes compiled,eager \
  --runs 3 --eager-new-tokens 32 --out $OUT/round38.json --profile $OUT/cprofile38 2>&1 | grep -E "^\| "
