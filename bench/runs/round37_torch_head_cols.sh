#!/usr/bin/env bash
# Round 37: output columns per workgroup of the torch mat-vec for the widest layer (the LM head,
# 151936 columns): 8 (current), 16 and 32 (bench/_v16, bench/_v32: the current code with more
# columns allowed; not committed). Each workgroup stages and normalises x before its columns, so
# more columns per workgroup share that prologue. Compiled f16, Dawn; step GPU and the head's time.
set -u
B="python3 bench/torch_generate.py --backend dawn --dtypes f16 --modes compiled --runs 3"
timeout 120 $B --out $OUT/cols8.json 2>&1 | grep -E "^\| f"
PYTHONPATH=$PWD/bench/_v16:$PYTHONPATH timeout 120 $B --out $OUT/cols16.json 2>&1 | grep -E "^\| f"
PYTHONPATH=$PWD/bench/_v32:$PYTHONPATH timeout 120 $B --out $OUT/cols32.json 2>&1 | grep -E "^\| f"
python3 -c "
import json
for n in ('cols8', 'cols16', 'cols32'):
    r = json.load(open('$OUT/' + n + '.json'))['results'][0]
    g = r['decode_step_gpu']
    print(n, 'decode', round(r['decode_tok_s'], 1), 'step GPU', round(g['gpu_us']), 'head', round(g['dispatch_us'][-3][1], 1), 'last layer', [round(u, 1) for _, u in g['dispatch_us'][-9:-3]])
"
