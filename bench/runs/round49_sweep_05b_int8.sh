#!/usr/bin/env bash
# Round 49 (engine): the shape sweep on the 0.5B's int8 path after round 45 (down quantizes x
# from memory now) and for q5_0 (the int8 path since round 46), Dawn.
set -u
timeout 280 python3 bench/sweep_decode.py --backend dawn --dtype q4_0,q8_0,q5_0 --out $OUT/sweep_05b_int8.json 2>&1 | grep -v "^{"
