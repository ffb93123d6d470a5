#!/usr/bin/env bash
# Round 53 (engine): keys per split of the decode attention on the 1.5B (head_dim 128; the
# 0.5B's head_dim 64 chose 32 in rounds 9 and 40, the 1.5B was never swept for it), and the
# 0.5B re-checked. A/B, same call, alternated twice.
set -u
S="python3 bench/sweep_decode.py --backend dawn"
for ab in attn_chunk=32,16 attn_chunk=32,64; do
  timeout 120 $S --ab $ab --preset qwen2.5-1.5b --dtype f16,q4_0 --out $OUT/round53_${ab//[=,]/_}_15b.json 2>&1 | grep -v "^{"
done
timeout 90 $S --ab attn_chunk=32,16 --dtype f16 --out $OUT/round53_chunk16_05b.json 2>&1 | grep -v "^{"
