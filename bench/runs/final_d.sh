#!/usr/bin/env bash
# Final part D: SmolLM2-135M's shape and weight type (Q4_1; the real file cannot travel here)
# on both backends, and the 1.5B f16 PyTorch peers with the working compiled path.
set -u
W="python3 -m webgpu_llm.cli.main"
timeout 120 $W bench --preset smollm2-135m --dtype q4_1 --backend dawn,wgpu --reps 5 --out $OUT/smollm2_shape.json 2>&1 | grep -E "^\| [a-z]"
timeout 300 $W bench --preset qwen2.5-1.5b --dtype f16 --backend dawn --reps 3 --peers torch --out $OUT/peers_15b_f16.json 2>&1 | grep -E "^\| [a-z]|torch (eager|compiled)"
