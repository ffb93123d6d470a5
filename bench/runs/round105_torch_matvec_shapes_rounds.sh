#!/usr/bin/env bash
# Round 105: round 104's promising settings again, three passes each, to see which hold:
# QKV, O, gate/up and down under 7 (threads per workgroup, columns per workgroup), f16 and f32,
# Dawn; the table gives each setting's median over the passes.
set -u
timeout 580 python3 bench/torch_step_sweep.py --backend dawn --roles qkv,o,gate_up,down \
  --shapes 256x2,256x4,128x2,128x4,128x8,256x16,64x2 --rounds 3 --out $OUT/step_sweep.json 2>&1 | grep -v "^  "
