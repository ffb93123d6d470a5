#!/usr/bin/env bash
# Round 21: torch-device attention and mat-vec with constant trip counts (head sizes and K as constants).
set -u
timeout 500 python3 bench/torch_generate.py --backend dawn --dtypes f16,f32 --runs 3 --out $OUT/torch_unroll.json 2>&1 | grep -v Warning | tail -7
python3 -c "
import json; d = json.load(open('$OUT/torch_unroll.json'))
for r in d['results']:
    g = r.get('decode_step_gpu')
    if g: print(r['dtype'], json.dumps(g))
"
