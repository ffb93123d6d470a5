#!/usr/bin/env bash
# Final part B1 for the 0.5B shape alone (its first attempt ran past its time limit with the
# torch peers): engine rows and the PyTorch CUDA peers.
set -u
timeout 560 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype f16,q8_0,q4_0,f32 --backend dawn,wgpu --reps 5 --peers torch --out $OUT/final_qwen2.5-0.5b.json 2>&1 | grep -E "^\| [a-z]|torch"
