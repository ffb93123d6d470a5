#!/usr/bin/env bash
# Round 80: with Dawn's command validation off (round 78) a submit costs less per dispatch, so
# the compiled replay's dispatches per submit (REPLAY_CHUNK, 32 since round 30) and eager's
# launches per submit (MAX_PENDING, 256 since round 25) are swept again, the settings
# alternated in one process (A B C A B C), at 65ba57e.
set -u
timeout 260 python3 bench/torch_generate.py --backend dawn --dtypes f32,f16 --modes compiled --runs 3 \
  --replay-chunk 16,32,64 --repeat 2 --out $OUT/chunks.json 2>&1 | grep -E "replay_chunk|^\| f"
timeout 260 python3 bench/torch_generate.py --backend dawn --dtypes f16 --modes eager --runs 3 \
  --max-pending 64,128,256 --repeat 2 --out $OUT/pending.json 2>&1 | grep -E "max_pending|^\| f"
