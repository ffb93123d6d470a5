#!/usr/bin/env bash
# Round 34 (and 35, with the cache value at the new position left out of the value loop and the new
# one added after it): the new token's key and value are taken from the token by the attention split that
# holds its position and written into the cache by the merge launch (attention_append; round 33
# wrote them from the attention launch, which then bound the caches writable); bench/_before
# holds the last commit (9bd06b5, not committed). Alternated before/after, compiled f16/f32, Dawn.
set -u
B="python3 bench/torch_generate.py --backend dawn --dtypes f16,f32 --modes compiled --runs 5"
for i in 1 2; do
  PYTHONPATH=$PWD/bench/_before:$PYTHONPATH timeout 140 $B --out $OUT/before_$i.json 2>&1 | grep -E "^\| f"
  timeout 140 $B --out $OUT/after_$i.json 2>&1 | grep -E "^\| f"
done
python3 -c "
import json
for n in ('before_1', 'after_1', 'before_2', 'after_2'):
    for r in json.load(open('$OUT/' + n + '.json'))['results']:
        g = r.get('decode_step_gpu')
        print(n, r['dtype'], 'decode', round(r['decode_tok_s'], 1), 'best', round(r['decode_tok_s_best'], 1), 'step GPU', g and round(g['gpu_us']), g and g['dispatches'], 'marginal', g and {k: round(v) for k, v in g['marginal_us'].items()})
"
