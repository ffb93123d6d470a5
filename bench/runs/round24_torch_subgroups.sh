#!/usr/bin/env bash
# Round 24: torch-device mat-vec column sums with subgroupAdd (2 barriers instead of log2(lanes) + 1).
set -u
timeout 500 python3 bench/torch_generate.py --backend dawn --dtypes f16,f32 --runs 5 --out $OUT/torch_subgroups.json 2>&1 | grep -v Warning | tail -7
python3 -c "
import json; d = json.load(open('$OUT/torch_subgroups.json'))
for r in d['results']:
    g = r.get('decode_step_gpu')
    if g: print(r['dtype'], json.dumps(g))
"
