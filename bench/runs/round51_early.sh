#!/usr/bin/env bash
# Round 51 (engine): float mat-vecs request their first unit's weight words before the
# prologue (Tuning.early), so that their latency overlaps the staging of x. Correctness on the
# GPU first, then A/B (alternated twice) on the 0.5B f16 (both backends), f32 and the 1.5B f16.
set -u
timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_kernels_linear.py -k "early or spread" 2>&1 | tail -1
timeout 120 python3 bench/sweep_decode.py --ab early --backend dawn,wgpu --dtype f16 --out $OUT/round51_early_05b.json 2>&1 | grep -v "^{"
timeout 60 python3 bench/sweep_decode.py --ab early --backend dawn --dtype f32 --out $OUT/round51_early_05b_f32.json 2>&1 | grep -v "^{"
timeout 90 python3 bench/sweep_decode.py --ab early --backend dawn --dtype f16 --preset qwen2.5-1.5b --out $OUT/round51_early_15b.json 2>&1 | grep -v "^{"
