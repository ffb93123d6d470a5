#!/usr/bin/env bash
# Round 15: split-K for the prompt's O and down matmuls (residual add moved into the next
# RMSNorm), swept with the tokens per thread.
set -u
S="timeout 250 python3 bench/sweep_decode.py --prefill"
$S --preset qwen2.5-0.5b --dtype f16,q4_0 --backend dawn,wgpu --out $OUT/sweep15a.json 2>&1 | grep -v '^{'
$S --preset qwen2.5-1.5b --dtype f16 --backend dawn,wgpu --out $OUT/sweep15b.json 2>&1 | grep -v '^{'
