#!/usr/bin/env bash
# Round 102: round 101 again, alternated inside one process (the host drifts between processes):
# submits from the main thread (0) and from the worker (1), A B A B A B, eager and compiled.
# The second process lowers Python's GIL switch interval to 0.2 ms (the worker, handed a
# command buffer, waits for the GIL while the main thread runs Python: up to 5 ms by default).
set -u
export WEBGPU_LLM_SUBMIT_THREAD=1
ARGS="--backend dawn --runs 2 --repeat 3 --submit-thread 0,1 --modes eager,compiled"
timeout 280 python3 bench/torch_generate.py $ARGS --out $OUT/ab_default.json 2>&1 | grep -E "^\| f" | sed "s/^/switch 5ms /"
timeout 280 python3 -c "import sys, runpy; sys.setswitchinterval(2e-4); sys.argv = ['bench/torch_generate.py'] + sys.argv[1:]; runpy.run_path('bench/torch_generate.py', run_name='__main__')" \
  $ARGS --out $OUT/ab_switch02.json 2>&1 | grep -E "^\| f" | sed "s/^/switch 0.2ms /"
