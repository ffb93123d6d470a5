#!/usr/bin/env bash
# Round 65: the defaults again after the build's check of the persistent layers (0.5B, Dawn
# and wgpu-native, f16/q8_0/q4_0): every cell must keep its persistent layers where round 64
# had them, and the check's cost at load is printed.
set -u
timeout 300 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype f16,q8_0,q4_0 --backend dawn,wgpu \
  --n-pp 0 --out $OUT/round65_05b_defaults.json 2>&1 | grep -v Warning | grep -v "^  tg"
