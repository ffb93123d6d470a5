#!/usr/bin/env bash
# Round 66: the persistent barrier's arrivals spread over 1, 2, 4 or 8 counters on separate
# 128-byte lines (kernels/persistent.py BARRIER_COUNTERS at commit bd6ee06, removed after this
# round), 0.5B f16 and q4_0 on Dawn.
set -u
timeout 400 python3 - <<'PY' 2>&1 | grep -v Warning
import json, os, sys
sys.path.insert(0, "bench")
from sweep_decode import DecodeBench, start_tuning
from webgpu_llm.kernels import persistent
from webgpu_llm.runtime.gpu import open_gpu
g = open_gpu("dawn")
out = []
for dtype in ("f16", "q4_0"):
    b = DecodeBench(g, "qwen2.5-0.5b", dtype)
    t = start_tuning(g, "qwen2.5-0.5b")
    for k in (1, 2, 4, 8, 1, 2, 4, 8):
        persistent.BARRIER_COUNTERS = k
        us = b.step_gpu(t) * 1e6
        b.tok_s()
        tok = b.tok_s(128)
        row = {"dtype": dtype, "counters": k, "persist": b.tf.tuning.persist, "note": b.tf.persist_note,
               "step_gpu_us": us, "tg128_tok_s": tok}
        out.append(row)
        print(f"{dtype:5s} counters {k}  persist={b.tf.tuning.persist}  step {us:6.1f} us  tg128 {tok:6.1f}", flush=True)
json.dump(out, open(os.environ["OUT"] + "/round66_barrier_counters.json", "w"), indent=1)
PY
