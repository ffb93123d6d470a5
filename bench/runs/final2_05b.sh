#!/usr/bin/env bash
# Final table, second session (0.5B engine rows; the PyTorch peers are the first session's).
set -u
timeout 560 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype f16,q8_0,q4_0,f32 --backend dawn,wgpu --reps 5 --out $OUT/final2_qwen2.5-0.5b.json 2>&1 | grep -E "^\| [a-z]"
