#!/usr/bin/env bash
# Round 22: arange registered as a planned factory op (transformers' masks call it 5x a token); both backends.
set -u
for b in dawn wgpu; do
  timeout 250 python3 bench/torch_generate.py --backend $b --dtypes f16 --modes compiled,eager --runs 3 --out $OUT/torch_arange_$b.json 2>&1 | grep -v Warning | tail -3
done
