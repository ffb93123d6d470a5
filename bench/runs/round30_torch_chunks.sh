#!/usr/bin/env bash
# Round 30: a compiled replay in several submits (0 = one submit, 48, 32, 16 dispatches each) and
# the 24 length-counter adds batched into one launch; bench/_before holds the last commit (635268e,
# not committed). Same host, compiled f16, Dawn; the collector is off during each timed generate.
set -u
B="python3 bench/torch_generate.py --backend dawn --dtypes f16 --modes compiled --runs 5"
PYTHONPATH=$PWD/bench/_before:$PYTHONPATH timeout 150 $B --out $OUT/before.json 2>&1 | grep -E "^\| f16"
timeout 300 $B --replay-chunk 0,48,32,16 --repeat 3 --out $OUT/after.json 2>&1 | grep -E "^\| f16"
python3 -c "
import json
for n in ('before', 'after'):
    for r in json.load(open('$OUT/' + n + '.json'))['results']:
        g = r.get('decode_step_gpu')
        print(n, r.get('replay_chunk'), 'decode', round(r['decode_tok_s'], 1), 'best', round(r['decode_tok_s_best'], 1), 'runs', [round(x, 3) for x in r['seconds']], 'step GPU', g and round(g['gpu_us']), g and g['dispatches'])
"
