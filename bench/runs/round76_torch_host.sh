#!/usr/bin/env bash
# Round 76: round 75's trims with each planned launch keeping its own bind groups by the blocks
# they bind (round 75's one-entry memo missed ~3 launches in 4: one op of one shape runs at
# every layer on other blocks). bench/_before holds 62cd4fb's package (not committed). The host
# alone (bench/torch_host_cost.py), before and after alternated three times, then eager
# generate before/after once more.
set -u
for i in 1 2 3; do
  PYTHONPATH=$PWD/bench/_before:${PYTHONPATH:-} timeout 100 python3 bench/torch_host_cost.py --backend dawn --repeat 7 --json $OUT/host_before_$i.json | sed "s/^/before $i /"
  timeout 100 python3 bench/torch_host_cost.py --backend dawn --repeat 7 --json $OUT/host_after_$i.json | sed "s/^/after $i /"
done
timeout 250 python3 bench/torch_ab.py --before bench/_before --repeat 1 --timeout 120 --out-dir $OUT/eager -- \
  --backend dawn --dtypes f16,f32 --modes eager --runs 3 2>&1 | grep -v "^=="
