#!/usr/bin/env bash
# Round 64: the 0.5B table with the new defaults (persistent decode layers on Dawn, 264
# workgroups; wgpu-native per kernel), then the profile of the 0.5B f16 decode on Dawn.
set -u
timeout 300 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype f16,q8_0,q4_0 --backend dawn,wgpu \
  --n-pp 0 --out $OUT/round64_05b_defaults.json 2>&1 | grep -v Warning | grep "^|"
timeout 200 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype f16 --backend dawn --n-pp 0 --profile \
  --out $OUT/round64_05b_f16_dawn_profile.json 2>&1 | grep -v Warning | grep -v "^building\|^  "
