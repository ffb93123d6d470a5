#!/usr/bin/env bash
# Thirteenth session's last code: the torch table (eager, fused layers, compiled; f32, f16) in
# one process, and the per-call host cost of eager ops on this host beside its CPU.
set -u
timeout 120 python3 bench/torch_op_cost.py --dtype f32 --json $OUT/op_cost_f32.json 2>&1 | tail -12
timeout 120 python3 bench/torch_op_cost.py --dtype f16 --json $OUT/op_cost_f16.json 2>&1 | tail -12
timeout 330 python3 bench/torch_generate.py --backend dawn --runs 3 --out $OUT/table.json 2>&1 | grep -E "^\| "
