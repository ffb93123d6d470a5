#!/usr/bin/env bash
# Round 31: the torch fused mat-vec reads x's 16-byte units beside the weights where x is not
# normalised (no staging, no barrier), stages with constant trip counts, and sums the RMSNorm's
# squares with subgroupAdd; bench/_before holds round 30's code (not committed). Same host,
# compiled f16 and f32, Dawn. The step's GPU time is the figure to compare (host noise).
set -u
B="python3 bench/torch_generate.py --backend dawn --dtypes f16,f32 --modes compiled --runs 5"
PYTHONPATH=$PWD/bench/_before:$PYTHONPATH timeout 200 $B --out $OUT/before.json 2>&1 | grep -E "^\| f"
timeout 200 $B --out $OUT/after.json 2>&1 | grep -E "^\| f"
python3 -c "
import json
for n in ('before', 'after'):
    for r in json.load(open('$OUT/' + n + '.json'))['results']:
        g = r.get('decode_step_gpu')
        print(n, r['dtype'], 'decode', round(r['decode_tok_s'], 1), 'best', round(r['decode_tok_s_best'], 1), 'step GPU', g and round(g['gpu_us']), g and g['dispatches'], 'marginal', {k: round(v) for k, v in g['marginal_us'].items()})
        print('   first layer', [(l, round(u, 1)) for l, u in g['dispatch_us'][6:14]])
"
