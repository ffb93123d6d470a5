#!/usr/bin/env bash
# Third session final table (after round 27: two-level row-group sums, O and down reshaped): engine rows of both models.
set -u
W="timeout 280 python3 -m webgpu_llm.cli.main bench --dtype f16,q8_0,q4_0,f32 --backend dawn,wgpu --reps 5"
$W --preset qwen2.5-0.5b --out $OUT/final4_qwen2.5-0.5b.json 2>&1 | grep -E "^\| [a-z]"
$W --preset qwen2.5-1.5b --out $OUT/final4_qwen2.5-1.5b.json 2>&1 | grep -E "^\| [a-z]"
