#!/usr/bin/env bash
# Round 93: the prompt matmul on the int8 matrix units (kernels/mma.py, Dawn's subgroup
# matrices). First its kernel tests on this GPU (the matrix-unit branch runs only here), then
# pp512 / tg128 of the q8_0 and q4_0 cells with it off (WEBGPU_LLM_NO_MMA=1: the feature not
# even requested) and on, alternated.
set -u
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_mma.py -k "dawn" 2>&1 | tail -15
B="timeout 150 python3 -m webgpu_llm.cli.main bench --dtype q8_0,q4_0 --backend dawn --reps 3"
for p in qwen2.5-0.5b qwen2.5-1.5b; do
  WEBGPU_LLM_NO_MMA=1 $B --preset $p --out $OUT/${p}_off.json 2>&1 | grep -E "^\| [a-z]" | sed 's/^/off /'
  $B --preset $p --out $OUT/${p}_on.json 2>&1 | grep -E "^\| [a-z]" | sed 's/^/on  /'
done
