#!/usr/bin/env bash
# (The second call's variants set `persist_attn_inflight`, in Tuning at commit b83a49a and removed
# after this round found no use; this third call's variants need nothing removed.)
# Round 62 (third call): other G, and the 0.5B's kernel shapes on the 1.5B. Second call: attention
# loads in flight capped, gate_up one unit in flight. First call (int8 off, attention chunk 32, spread off): which 1.5B decode kernel keeps two persistent workgroups per SM from fitting?
# Each variant of the 1.5B Tuning is built with persist=264; the calibration says whether all
# 264 workgroups were resident (else it falls back), and the step's GPU time is measured.
set -u
timeout 500 python3 - <<'PY' 2>&1 | grep -v Warning
import dataclasses, json, os, sys
sys.path.insert(0, "bench")
from sweep_decode import DecodeBench, start_tuning
from webgpu_llm.runtime.gpu import open_gpu
g = open_gpu("dawn")
out = []
for dtype in ("f16", "q4_0"):
    b = DecodeBench(g, "qwen2.5-1.5b", dtype)
    base = start_tuning(g, "qwen2.5-1.5b", ("persist=264",))
    mv = dict((r, (wg, tpr, ilp)) for r, wg, tpr, ilp in base.mv)
    from webgpu_llm.models.transformer import Tuning
    narrow = dataclasses.replace(Tuning.default(g, 896, 128), persist=264)
    variants = {
        "G 140": dataclasses.replace(base, persist=140),
        "G 200": dataclasses.replace(base, persist=200),
        "0.5B shapes, G 264": narrow,
        "0.5B shapes, G 200": dataclasses.replace(narrow, persist=200),
    }
    for name, t in variants.items():
        us = b.step_gpu(t) * 1e6
        row = {"dtype": dtype, "variant": name, "persist": b.tf.tuning.persist, "step_gpu_us": us}
        out.append(row)
        print(f"{dtype:5s} {name:30s} persist={b.tf.tuning.persist:3d} {b.tf.persist_note[:60]} step {us:7.1f} us", flush=True)
json.dump(out, open(os.environ["OUT"] + "/round62_persistent_fit_groups.json", "w"), indent=1)
PY
