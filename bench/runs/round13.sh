#!/usr/bin/env bash
# Round 13: int8 activations with dot4I8Packed for q8_0/q4_0 mat-vecs against the float path.
set -u
S="timeout 250 python3 bench/sweep_decode.py --int8"
$S --preset qwen2.5-0.5b --dtype q8_0,q4_0 --backend dawn,wgpu --out $OUT/int8_05b.json 2>&1 | grep -v '^{'
$S --preset qwen2.5-1.5b --dtype q8_0,q4_0 --backend dawn,wgpu --out $OUT/int8_15b.json 2>&1 | grep -v '^{'
