#!/usr/bin/env bash
# Round 97: the prompt attention's key chunks shared out over several workgroups per query
# block, then merged (Tuning.prompt_splits). Its tests here, then the 512-token prompt's GPU
# time through the layers and pp512 at splits 1 / 2 / 4 / 8 (bench/sweep_decode.py --ab, alternated).
# Measured no gain (bench/NOTES.md round 97): the split kernel, its merge and the Tuning field
# were dropped before committing, so this script no longer runs as is.
set -u
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_misc.py -k prompt_attention 2>&1 | tail -2
S="timeout 170 python3 bench/sweep_decode.py --prefill --backend dawn"
$S --preset qwen2.5-0.5b --dtype f16 --ab prompt_splits=1,4 --out $OUT/05b_f16_1_4.json 2>&1 | grep -v "^Warning" | grep prompt_splits
$S --preset qwen2.5-0.5b --dtype f16 --ab prompt_splits=2,8 --out $OUT/05b_f16_2_8.json 2>&1 | grep -v "^Warning" | grep prompt_splits
$S --preset qwen2.5-0.5b --dtype q8_0 --ab prompt_splits=1,4 --out $OUT/05b_q8_0_1_4.json 2>&1 | grep -v "^Warning" | grep prompt_splits
$S --preset qwen2.5-1.5b --dtype f16 --ab prompt_splits=1,4 --out $OUT/15b_f16_1_4.json 2>&1 | grep -v "^Warning" | grep prompt_splits
$S --preset qwen2.5-1.5b --dtype f16 --ab prompt_splits=4,8 --out $OUT/15b_f16_4_8.json 2>&1 | grep -v "^Warning" | grep prompt_splits
