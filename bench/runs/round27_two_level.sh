#!/usr/bin/env bash
# Round 27: row groups wider than a subgroup reduce with subgroupAdd + one barrier (was a tree of
# log2(tpr) barriers); before/after on one host (bench/_before = the previous commit, not committed),
# then the shape sweep with 128/256 threads per row pair among the candidates.
set -u
B="python3 -m webgpu_llm.cli.main bench --preset qwen2.5-0.5b --dtype f16,q4_0 --backend dawn,wgpu --reps 3 --n-pp 0 --json"
PYTHONPATH=$PWD/bench/_before:$PYTHONPATH timeout 150 $B > $OUT/before.json 2>/dev/null
timeout 150 $B > $OUT/after.json 2>/dev/null
python3 -c "
import json
for n in ('before', 'after'):
    d = json.load(open('$OUT/' + n + '.json'))
    rows = d['engine']
    for r in rows:
        print(n, {k: r[k] for k in r if k in ('backend', 'dtype', 'tg_tok_s', 'tg_runs')})
"
timeout 280 python3 bench/sweep_decode.py --preset qwen2.5-0.5b --dtype f16 --backend dawn --out $OUT/sweep27.json 2>&1 | grep -v '^{'
