#!/usr/bin/env bash
# Round 99: where a compiled torch decode token goes on this host (cProfile of one generate,
# f16 and f32, Dawn), beside the timed runs.
set -u
timeout 500 python3 bench/torch_generate.py --backend dawn --modes compiled --runs 3 --out $OUT/torch_compiled.json \
  --profile $OUT/prof 2>&1 | grep -v "^Warning" | tail -12
for f in $OUT/prof_*; do echo "== $f"; head -45 $f | tail -38; done
