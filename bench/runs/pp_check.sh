#!/usr/bin/env bash
# pp512 after the matmul bank-conflict fix (and tg as a check), 0.5B and 1.5B f16, both backends.
set -u
W="python3 -m webgpu_llm.cli.main"
for p in qwen2.5-0.5b qwen2.5-1.5b; do
  timeout 120 $W bench --preset $p --dtype f16 --backend dawn,wgpu --reps 3 --n-gen 32 2>&1 | grep -E "^\| [a-z]"
done
