#!/usr/bin/env bash
# Round 19: eager launches per submit (GPU/CPU overlap) and the compiled decode step's GPU time.
set -u
timeout 500 python3 bench/torch_generate.py --backend dawn --dtypes f16 --runs 3 --max-pending 2048,512,256,128,64 --out $OUT/torch_pending.json 2>&1 | grep -v Warning
python3 -c "
import json; d = json.load(open('$OUT/torch_pending.json'))
for r in d['results']:
    g = r.get('decode_step_gpu')
    if g: print(json.dumps(g, indent=1))
"
