#!/usr/bin/env bash
# Round 75: the torch device's per-op host path trimmed (plans reuse a launch's last bind group,
# skip the binding-limit scan while no block is over it; views registered as the native Meta
# redispatch). bench/_before holds 62cd4fb's package (not committed). First the host alone
# (bench/torch_host_cost.py: submits dropped, reads replayed), then eager generate through
# bench/torch_ab.py, before and after alternated.
set -u
for i in 1 2; do
  PYTHONPATH=$PWD/bench/_before:${PYTHONPATH:-} timeout 150 python3 bench/torch_host_cost.py --backend dawn --repeat 5 --json $OUT/host_before_$i.json | sed "s/^/before $i /"
  timeout 150 python3 bench/torch_host_cost.py --backend dawn --repeat 5 --json $OUT/host_after_$i.json | sed "s/^/after $i /"
done
timeout 420 python3 bench/torch_ab.py --before bench/_before --repeat 2 --timeout 200 --out-dir $OUT/eager -- \
  --backend dawn --dtypes f16,f32 --modes eager --runs 3 2>&1 | grep -v "^=="
