#!/usr/bin/env bash
# Final table, part B1: the engine rows again after the matmul fix, with the PyTorch CUDA peers
# (transformers generate eager; static cache + torch.compile for f16) in the same process.
set -u
W="python3 -m webgpu_llm.cli.main"
for p in qwen2.5-0.5b qwen2.5-1.5b; do
  timeout 280 $W bench --preset $p --dtype f16,q8_0,q4_0,f32 --backend dawn,wgpu --reps 5 --peers torch --out $OUT/final_$p.json 2>&1 | grep -E "^\| [a-z]"
done
