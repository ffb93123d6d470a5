#!/usr/bin/env bash
# Round 72: a persistent stage whose mat-vec requests its first weights early waits for the
# stage before it after those requests (inside its first turn) instead of before its call.
# A/B in one call, alternated: the hook found (wait inside) or not (wait before), 0.5B f16 and
# f32 on Dawn (where `early` is on), default persistent layers (228 workgroups).
set -u
timeout 400 python3 - <<'PY' 2>&1 | grep -v Warning
import json, os, sys
sys.path.insert(0, "bench")
from sweep_decode import DecodeBench, start_tuning
from webgpu_llm.kernels import linear
from webgpu_llm.runtime.gpu import open_gpu
g = open_gpu("dawn")
out = []
HOOK = linear.EARLY_HOOK
for dtype in ("f16", "f32"):
    b = DecodeBench(g, "qwen2.5-0.5b", dtype)
    t = start_tuning(g, "qwen2.5-0.5b")
    for inside in (False, True, False, True):
        linear.EARLY_HOOK = HOOK if inside else HOOK.replace("{}", "{ }")  # (unrecognised: wait before)
        us = b.step_gpu(t) * 1e6
        b.tok_s()
        tok = b.tok_s(128)
        row = {"dtype": dtype, "wait_inside": inside, "persist": b.tf.tuning.persist, "note": b.tf.persist_note,
               "step_gpu_us": us, "tg128_tok_s": tok}
        out.append(row)
        print(f"{dtype:4s} wait {'inside' if inside else 'before'}  persist={b.tf.tuning.persist}  step {us:6.1f} us  tg128 {tok:6.1f}", flush=True)
json.dump(out, open(os.environ["OUT"] + "/round72_wait_after_early.json", "w"), indent=1)
PY
