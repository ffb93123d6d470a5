#!/usr/bin/env bash
# Round 60: the engine's decode layers as persistent dispatches (Tuning.persist), against one
# dispatch per kernel, on the 0.5B f16 first (Dawn and wgpu-native); greedy agreement checked.
set -u
timeout 560 python3 -m webgpu_llm.cli.main bench --preset ${PRESET:-qwen2.5-0.5b} --dtype ${DTYPES:-f16} --backend ${BACKENDS:-dawn,wgpu} \
  --persist ${PERSIST:-0,132} --n-pp 0 --reps 5 ${EXTRA:-} --out $OUT/round60_${TAG:-05b}.json 2>&1 \
  | grep -v Warning
