#!/usr/bin/env bash
# Round 29: torch attention with 8 threads per key (16-key chunks, 9 splits at 144 keys) against 4
# (32-key chunks, 5 splits): bench/_before holds the 8-thread variant (not committed); same host.
set -u
B="python3 bench/torch_generate.py --backend dawn --dtypes f16 --modes compiled --runs 5"
for i in 1 2; do
  PYTHONPATH=$PWD/bench/_before:$PYTHONPATH timeout 120 $B --out $OUT/tpk8_$i.json 2>&1 | grep -E "^\| f16"
  timeout 120 $B --out $OUT/tpk4_$i.json 2>&1 | grep -E "^\| f16"
done
python3 -c "
import json
for n in ('tpk8_1', 'tpk4_1', 'tpk8_2', 'tpk4_2'):
    r = json.load(open('$OUT/' + n + '.json'))['results'][-1]
    g = r['decode_step_gpu']
    print(n, round(r['decode_tok_s'], 1), 'step GPU', round(g['gpu_us']), {k: round(v) for k, v in g['top_kernels_us'].items() if k.startswith('sdpa')})
"
