#!/usr/bin/env bash
# Correctness on the GPU machine beside a torch-kernel timing: the compiler's attention tests
# (where pytest is installed) and a compiled greedy generate against the CPU on Dawn.
set -u
if python3 -c "import pytest" 2>/dev/null; then
  timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/test_torch_compile.py \
    -k "attention or subgroups or decode_graph" 2>&1 | tail -3
else
  echo "no pytest here: greedy check only"
fi
timeout 200 python3 bench/torch_greedy_check.py --backend dawn
