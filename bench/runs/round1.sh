#!/usr/bin/env bash
# Round 1 on the GPU machine: adapters, kernel tests on both backends, decode/prefill of the
# 0.5B f16 shape with profile, mat-vec shape sweep. Run from the repo root after .gl/setup.sh.
set -u
W="python3 -m webgpu_llm.cli.main"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
$W info --json > $OUT/info.json; $W info | grep -E "backend|\[|features|binding|storage-buffers"
WEBGPU_LLM_TEST_BACKENDS=wgpu,dawn timeout 200 python3 -m pytest -q -x -p no:cacheprovider tests/test_kernels_linear.py 2>&1 | tail -3
timeout 200 python3 bench/tune_matvec.py --preset qwen2.5-0.5b --dtype f16,q8_0,q4_0 --backend dawn,wgpu --out $OUT/tune.json 2>&1 | cut -c1-80
timeout 240 $W bench --preset qwen2.5-0.5b --dtype f16 --backend dawn,wgpu --profile --reps 3 --out $OUT/bench.json 2>&1 | tee $OUT/bench.md | grep -v "^| [a-z_]*_[a-z0-9_+]* |" | head -40
