#!/usr/bin/env bash
# Round 11: prompt matmul tokens per thread (tm = 2, 4, 8) swept per role.
set -u
S="timeout 200 python3 bench/sweep_decode.py --prefill"
$S --preset qwen2.5-0.5b --dtype f16,q4_0 --backend dawn,wgpu --out $OUT/sweep11a.json 2>&1 | grep -v '^{'
$S --preset qwen2.5-1.5b --dtype f16 --backend dawn,wgpu --out $OUT/sweep11b.json 2>&1 | grep -v '^{'
