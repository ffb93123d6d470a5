#!/usr/bin/env bash
# Round 20: split-key attention for the torch device (decode: 14 rows -> keys over ~70 workgroups).
set -u
timeout 280 python3 bench/torch_generate.py --backend dawn --dtypes f16 --runs 3 --max-pending 2048,256 --out $OUT/torch_sdpa_f16.json 2>&1 | grep -v Warning
timeout 250 python3 bench/torch_generate.py --backend dawn --dtypes f32 --runs 3 --out $OUT/torch_sdpa_f32.json 2>&1 | grep -v Warning | tail -4
python3 -c "
import json; d = json.load(open('$OUT/torch_sdpa_f16.json'))
for r in d['results']:
    g = r.get('decode_step_gpu')
    if g: print(json.dumps(g))
"
