#!/usr/bin/env bash
# Twelfth session's table for the cells the matrix units change (q8_0 / q4_0 prompts): the
# kernel tests on this GPU, the gate/up probe, then per model the Dawn cells with the matrix
# units off (WEBGPU_LLM_NO_MMA=1) and the whole row on both backends with them on (wgpu-native
# has no subgroup matrices: its cells are the SIMT path), and the 0.5B q8_0 prompt profile.
set -u
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_mma.py -k "dawn" 2>&1 | tail -2
python3 bench/probe_mma_matmul.py --out $OUT/probe_gu.json 2>&1 | grep -v "^Warning"
W="timeout 200 python3 -m webgpu_llm.cli.main bench --dtype q8_0,q4_0 --reps 5"
for p in qwen2.5-0.5b qwen2.5-1.5b; do
  WEBGPU_LLM_NO_MMA=1 $W --backend dawn --preset $p --out $OUT/final15_${p}_off.json 2>&1 | grep -E "^\| [a-z]" | sed 's/^/off /'
  $W --backend dawn,wgpu --preset $p --out $OUT/final15_${p}.json 2>&1 | grep -E "^\| [a-z]" | sed 's/^/on  /'
done
timeout 150 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype q8_0 --backend dawn --profile --reps 3 \
  --out $OUT/final15_profile_05b_q8_0.json 2>&1 | tail -30
