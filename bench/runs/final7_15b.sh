#!/usr/bin/env bash
# Seventh session: the 1.5B rows of the final table after round 53 (64 keys per attention split
# for 128-dimension heads), tg128 on both backends (pp512 is not affected: decode only).
set -u
timeout 400 python3 -m webgpu_llm.cli.main bench --preset qwen2.5-1.5b --dtype f16,q8_0,q4_0,f32 --backend dawn,wgpu \
  --reps 5 --n-pp 0 --out $OUT/final7_qwen2.5-1.5b.json 2>&1 | grep -E "^\| [a-zQ]"
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_models.py -k "switches or greedy or logits" 2>&1 | tail -1
