#!/usr/bin/env bash
# Round 94: the MMA matmul's input quantized once by its own kernel (round 93: each workgroup
# quantized x itself, ~135 of the gate/up's 366 us). Kernel tests on this GPU, the probe on the
# gate/up and down shapes, then pp512 / tg128 with the matrix units off and on, alternated.
set -u
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_mma.py -k "dawn" 2>&1 | tail -4
python3 bench/probe_mma_matmul.py --out $OUT/probe_gu.json 2>&1 | grep -v "^Warning"
python3 bench/probe_mma_matmul.py --rows 896 --k 4864 --epilogue add --out $OUT/probe_down.json 2>&1 | grep -v "^Warning"
B="timeout 150 python3 -m webgpu_llm.cli.main bench --dtype q8_0,q4_0 --backend dawn --reps 3"
for p in qwen2.5-0.5b qwen2.5-1.5b; do
  WEBGPU_LLM_NO_MMA=1 $B --preset $p --out $OUT/${p}_off.json 2>&1 | grep -E "^\| [a-z]" | sed 's/^/off /'
  $B --preset $p --out $OUT/${p}_on.json 2>&1 | grep -E "^\| [a-z]" | sed 's/^/on  /'
done
