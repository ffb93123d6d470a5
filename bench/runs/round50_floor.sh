#!/usr/bin/env bash
# Round 50: the decode step's floor (bench/probe_floor.py): dispatch boundaries, one-workgroup
# critical paths and weight bytes, measured in the real step for the six target cells.
set -u
for p in qwen2.5-0.5b qwen2.5-1.5b; do
  for d in f16 q8_0 q4_0; do
    timeout 150 python3 bench/probe_floor.py --backend dawn --preset $p --dtype $d --out $OUT/round50_floor_${p}_${d}_dawn.json 2>&1 | grep -v "^| ---"
  done
done
timeout 150 python3 bench/probe_floor.py --backend wgpu --preset qwen2.5-0.5b --dtype f16 --out $OUT/round50_floor_qwen2.5-0.5b_f16_wgpu.json 2>&1 | grep -v "^| ---"
