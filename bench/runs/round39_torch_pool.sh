#!/usr/bin/env bash
# Torch round 39: the pool hands out the first-made free block of a class instead of the last
# freed (memory.Pool), so a decode step's ops get the same blocks every token and the stream's
# bind-group cache hits. Eager generate, Dawn, f16 and f32, before (HEAD's package, copied to
# bench/_before, not committed) and after, alternated twice in one call.
set -u
B="python3 bench/torch_generate.py --backend dawn --dtypes f16,f32 --modes eager --runs 3"
for i in 1 2; do
  PYTHONPATH=$PWD/bench/_before:${PYTHONPATH:-} timeout 150 $B --out $OUT/torch_round39_before_$i.json 2>&1 | grep -E "^\| f"
  timeout 150 $B --out $OUT/torch_round39_after_$i.json 2>&1 | grep -E "^\| f"
done
