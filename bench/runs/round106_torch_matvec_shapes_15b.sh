#!/usr/bin/env bash
# Round 106: round 105's sweep on the Qwen2.5-1.5B shape (random weights), to see whether
# round 105's f16 winners (gate/up 16 threads a column, QKV 128-thread workgroups) carry over
# to other widths before a default changes. f16 three passes, f32 two; Dawn.
set -u
S=256x2,256x4,128x2,128x4,128x8,256x16,64x2
timeout 330 python3 bench/torch_step_sweep.py --backend dawn --model qwen2.5-1.5b --dtypes f16 --roles qkv,o,gate_up,down \
  --shapes $S --rounds 3 --out $OUT/step_sweep_15b_f16.json 2>&1 | grep -v "^  "
timeout 240 python3 bench/torch_step_sweep.py --backend dawn --model qwen2.5-1.5b --dtypes f32 --roles qkv,gate_up \
  --shapes $S --rounds 2 --out $OUT/step_sweep_15b_f32.json 2>&1 | grep -v "^  "
