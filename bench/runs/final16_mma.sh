#!/usr/bin/env bash
# Twelfth session, after round 98: the MMA kernel tests on this GPU, then per model the Dawn
# row with the subgroup-matrix feature off (WEBGPU_LLM_NO_MMA=1: not even requested) and on
# (f16 too: does enabling the feature move anything else?), and wgpu-native's q8_0 / q4_0 row.
set -u
WEBGPU_LLM_TEST_BACKENDS=dawn timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_mma.py tests/test_models.py -k "mma or int8_tiles" 2>&1 | tail -2
W="timeout 200 python3 -m webgpu_llm.cli.main bench --reps 5"
for p in qwen2.5-0.5b qwen2.5-1.5b; do
  WEBGPU_LLM_NO_MMA=1 $W --dtype f16,q8_0,q4_0 --backend dawn --preset $p --out $OUT/final16_${p}_off.json 2>&1 | grep -E "^\| [a-z]" | sed 's/^/off /'
  $W --dtype f16,q8_0,q4_0 --backend dawn --preset $p --out $OUT/final16_${p}.json 2>&1 | grep -E "^\| [a-z]" | sed 's/^/on  /'
  $W --dtype q8_0,q4_0 --backend wgpu --preset $p --out $OUT/final16_${p}_wgpu.json 2>&1 | grep -E "^\| [a-z]" | sed 's/^/wgpu /'
done
