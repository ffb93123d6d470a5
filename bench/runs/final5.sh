#!/usr/bin/env bash
# Fifth session final table (after round 38: float weights read by adjacent words, down at 256
# threads per row pair): engine rows of both models, then the 0.5B f16 decode profile.
set -u
W="timeout 280 python3 -m webgpu_llm.cli.main bench --dtype f16,q8_0,q4_0,f32 --backend dawn,wgpu --reps 5"
$W --preset qwen2.5-0.5b --out $OUT/final5_qwen2.5-0.5b.json 2>&1 | grep -E "^\| [a-z]"
$W --preset qwen2.5-1.5b --out $OUT/final5_qwen2.5-1.5b.json 2>&1 | grep -E "^\| [a-z]"
timeout 120 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype f16 --backend dawn --profile --n-pp 0 \
  --out $OUT/final5_profile_05b_f16.json 2>&1 | tail -25
