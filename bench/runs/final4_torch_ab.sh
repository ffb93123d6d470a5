#!/usr/bin/env bash
# Same host, before and after: the second session's last commit (1b19aa2, copied to bench/_before,
# not committed) and this session's code, transformers generate on the webgpu device, Dawn.
set -u
B="python3 bench/torch_generate.py --backend dawn --dtypes f32,f16 --runs 3"
PYTHONPATH=$PWD/bench/_before:$PYTHONPATH timeout 280 $B --out $OUT/torch_before.json 2>&1 | grep -v Warning | tail -5
timeout 280 $B --out $OUT/torch_after.json 2>&1 | grep -v Warning | tail -5
python3 -c "
import json
for n in ('before', 'after'):
    d = json.load(open('$OUT/torch_' + n + '.json'))
    for r in d['results']:
        g = r.get('decode_step_gpu')
        print(n, r['dtype'], r['mode'], 'decode', round(r['decode_tok_s'], 1), 'launches/run', r['launches_per_run'], 'fallbacks', r['fallback_report'], 'step GPU us', g and round(g['gpu_us']))
"
