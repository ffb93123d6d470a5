#!/usr/bin/env bash
# Round 36: is the host's run-to-run swing (0.55-0.80 s for 128 tokens within one setting) the
# scheduler moving the Python thread between cores? The same compiled f16 benchmark, unpinned and
# pinned to 4 cores (taskset -c 2-5), alternated twice; Dawn.
set -u
nproc; lscpu | grep -E "Model name|Thread|Core|Socket|NUMA node" || true
B="python3 bench/torch_generate.py --backend dawn --dtypes f16 --modes compiled --runs 7"
for i in 1 2; do
  timeout 120 $B --out $OUT/free_$i.json 2>&1 | grep -E "^\| f"
  timeout 120 taskset -c 2-5 $B --out $OUT/pinned_$i.json 2>&1 | grep -E "^\| f"
done
python3 -c "
import json
for n in ('free_1', 'pinned_1', 'free_2', 'pinned_2'):
    r = json.load(open('$OUT/' + n + '.json'))['results'][0]
    print(n, 'decode', round(r['decode_tok_s'], 1), 'best', round(r['decode_tok_s_best'], 1), 'runs', sorted(round(x, 3) for x in r['seconds']))
"
