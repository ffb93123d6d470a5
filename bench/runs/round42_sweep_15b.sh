#!/usr/bin/env bash
# Round 42 (engine): the shape sweep on the 1.5B for every weight type after rounds 39-40 (the
# defaults were swept on the 0.5B; round 41's sweep hinted the 1.5B's int8 shapes differ).
set -u
timeout 250 python3 bench/sweep_decode.py --backend dawn --dtype q8_0,q4_0,f16 --preset qwen2.5-1.5b --out $OUT/sweep_15b.json 2>&1 | grep -v "^{"
