#!/usr/bin/env bash
# Round 101: queue submits on a worker thread (torch/submitter.py, WEBGPU_LLM_SUBMIT_THREAD=1)
# against the main thread's submits, eager and compiled, f32 and f16, alternated twice.
# The second pair also lowers Python's GIL switch interval (the worker waits for the GIL
# after being handed a command buffer while the main thread runs Python).
set -u
run() {  # label, env..., then args
  local label=$1; shift
  env "$@" timeout 250 python3 bench/torch_generate.py --backend dawn --runs 3 --modes eager,compiled \
    --out $OUT/$label.json 2>&1 | grep -E "^\| f" | sed "s/^/$label /"
}
run off_1 WEBGPU_LLM_SUBMIT_THREAD=0
run on_1 WEBGPU_LLM_SUBMIT_THREAD=1
run off_2 WEBGPU_LLM_SUBMIT_THREAD=0
run on_2 WEBGPU_LLM_SUBMIT_THREAD=1
