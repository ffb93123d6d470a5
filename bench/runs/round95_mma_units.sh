#!/usr/bin/env bash
# Round 95: units per stage of the MMA matmul (1, 2, 3: fewer barriers a unit, more workgroup
# memory; the variant with 2-3 units a stage was measured slower and not kept: the probe now
# times the kept kernel and its cuts only) on the gate/up, down and QKV shapes of the 0.5B
# (probe), after its kernel tests here.
set -u
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_mma.py -k "dawn" 2>&1 | tail -3
python3 bench/probe_mma_matmul.py --out $OUT/probe_gu.json 2>&1 | grep -v "^Warning"
python3 bench/probe_mma_matmul.py --rows 896 --k 4864 --epilogue add --out $OUT/probe_down.json 2>&1 | grep -v "^Warning"
python3 bench/probe_mma_matmul.py --rows 1152 --k 896 --epilogue store --out $OUT/probe_qkv.json 2>&1 | grep -v "^Warning"
