#!/usr/bin/env bash
# Sixth session: the 0.5B rows that round 51 (Tuning.early, Dawn) changes, the 0.5B f16 decode
# profile, and the GPU's own run of the model tests with its tuning.
set -u
W="timeout 150 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --backend dawn --reps 5"
$W --dtype f16,f32 --out $OUT/final6_qwen2.5-0.5b_dawn.json 2>&1 | grep -E "^\| [a-z]"
timeout 90 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype f16 --backend dawn --profile --n-pp 0 \
  --out $OUT/final6_profile_05b_f16.json 2>&1 | tail -14
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_models.py tests/test_torch_device.py -k "switches or greedy or logits or pool or settles" 2>&1 | tail -1
