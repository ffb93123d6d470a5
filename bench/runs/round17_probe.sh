#!/usr/bin/env bash
# Round 17 probe: a grid barrier inside one dispatch vs a dispatch boundary, and its visibility.
set -u
timeout 200 python3 bench/probe_grid_barrier.py --backend dawn,wgpu --groups 132,264,528,1056 --phases 200 --reps 20 --out $OUT/grid_barrier.json
