#!/usr/bin/env bash
# Fourth session, before and after on the same host, alternated: the third session's last commit
# (635268e, copied to bench/_before, not committed) and this session's code; transformers generate
# on the webgpu device, Dawn, eager and compiled, f32 and f16.
set -u
B="python3 bench/torch_generate.py --backend dawn --dtypes f32,f16 --runs 3"
for i in 1 2; do
  PYTHONPATH=$PWD/bench/_before:$PYTHONPATH timeout 140 $B --out $OUT/torch_before_$i.json 2>&1 | grep -E "^\| f"
  timeout 140 $B --out $OUT/torch_after_$i.json 2>&1 | grep -E "^\| f"
done
python3 -c "
import json
for n in ('before_1', 'after_1', 'before_2', 'after_2'):
    for r in json.load(open('$OUT/torch_' + n + '.json'))['results']:
        g = r.get('decode_step_gpu')
        print(n, r['dtype'], r['mode'], 'decode', round(r['decode_tok_s'], 1), 'best', round(r.get('decode_tok_s_best', 0), 1), 'fallbacks', sum(r['fallback_report'].values()), 'step GPU', g and round(g['gpu_us']), g and g['dispatches'])
"
