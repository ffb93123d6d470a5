#!/usr/bin/env bash
# Round 78: Dawn's `skip_validation` device toggle against the eager token's encode + submit
# cost (round 77: ~5-6 µs a dispatch on top of the host's ops). bench/torch_host_cost.py
# --submit (reads answered, nothing waits for the GPU), default and toggled alternated.
set -u
for i in 1 2 3; do
  timeout 100 python3 bench/torch_host_cost.py --backend dawn --repeat 7 --submit --json $OUT/default_$i.json | sed "s/^/default $i /"
  timeout 100 python3 bench/torch_host_cost.py --backend dawn --repeat 7 --submit --dawn-toggles skip_validation --json $OUT/skip_$i.json | sed "s/^/skip_validation $i /"
done
