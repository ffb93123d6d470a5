#!/usr/bin/env bash
# Round 88: round 87's attention kernel with a thread's values requested after its key's loads
# (still before the first barrier). bench/_before holds 2dfdc6b's package (not committed);
# compiled f16 and f32, one short generate each: the decode step's GPU time is the figure.
set -u
for side in before after; do
  pp=""; [ $side = before ] && pp="$PWD/bench/_before:"
  PYTHONPATH=$pp${PYTHONPATH:-} timeout 120 python3 bench/torch_generate.py --backend dawn --modes compiled --runs 1 --new-tokens 32 \
    --out $OUT/${side}.json > /dev/null 2>&1
  python3 -c "
import json; d=json.load(open('$OUT/${side}.json'))
for r in d['results']:
    g=r['decode_step_gpu']; print('$side', r['dtype'], round(g['gpu_us']), round(g['marginal_us'].get('sdpa',0)), round(g['top_kernels_us'].get('sdpa',0)))"
done
