#!/usr/bin/env bash
# After the mat-vec went back to using each row's unit right after its load (a CPU adapter
# spilled registers with all loads first): the 0.5B and 1.5B decode/prompt rows again.
set -u
W="timeout 250 python3 -m webgpu_llm.cli.main bench --dtype f16,q4_0 --backend dawn,wgpu --reps 3"
$W --preset qwen2.5-0.5b --out $OUT/check_05b.json 2>&1 | grep -E "^\| [a-z]"
$W --preset qwen2.5-1.5b --out $OUT/check_15b.json 2>&1 | grep -E "^\| [a-z]"
