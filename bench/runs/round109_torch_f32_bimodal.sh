#!/usr/bin/env bash
# Round 109 (diagnosis): the 0.5B f32 compiled step's GPU time is bimodal across recordings
# (rounds 104-107: the same code 1110-1140 µs or 1360-2900 µs). Record the step 10 times; for each,
# its GPU time and every dispatch's own time (one timestamped pass each): is the slow mode one
# kernel, or all of them? Dawn.
set -u
cat > /tmp/diag.py <<'PY'
import json, os, sys, warnings
sys.path.insert(0, "bench")
import numpy as np
import torch_generate as tg, torch_step_sweep as sw
import webgpu_llm.torch as wt
warnings.simplefilter("ignore")
wt.set_backend("dawn")
m, prompt = sw.compiled_model(dict(tg.MODELS["qwen2.5-0.5b"]), "f32")
recs = []
for i in range(10):
    us, n = sw.step_us(m, prompt, 30)
    prog = tg.decode_step_program()
    prof = prog.profile()
    again = prog.time_gpu(1, reps=30) * 1e6
    recs.append({"step_us": us, "again_us": again, "labels": [l for l, _ in prof], "us": [s * 1e6 for _, s in prof]})
    print(f"record {i}: step {us:.1f} µs, again {again:.1f}, dispatches summed {sum(recs[-1]['us']):.1f}", flush=True)
json.dump(recs, open(os.environ["OUT"] + "/records.json", "w"))
fast, slow = min(recs, key=lambda r: r["step_us"]), max(recs, key=lambda r: r["step_us"])
d = np.array(slow["us"]) - np.array(fast["us"])
print(f"\nslowest - fastest record: step {slow['step_us'] - fast['step_us']:+.1f} µs, dispatches {d.sum():+.1f}")
print("| dispatch | kernel | fast µs | slow µs |\n| --- | --- | --- | --- |")
for i in np.argsort(-np.abs(d))[:12]:
    print(f"| {i} | {fast['labels'][i]} | {fast['us'][i]:.1f} | {slow['us'][i]:.1f} |")
PY
timeout 560 python3 /tmp/diag.py
