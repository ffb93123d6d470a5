#!/usr/bin/env bash
# Round 63: QKV and attention as ordinary dispatches, O + gate/up + down persistent (the switch,
# Tuning.persist_from, was removed after this round: see NOTES)
# (Tuning.persist_from=2): does the 1.5B's persistent part then fit two workgroups per SM,
# and what does the 0.5B lose or gain against all five stages persistent?
set -u
timeout 500 python3 - <<'PY' 2>&1 | grep -v Warning
import dataclasses, json, os, sys
sys.path.insert(0, "bench")
from sweep_decode import DecodeBench, start_tuning
from webgpu_llm.runtime.gpu import open_gpu
g = open_gpu("dawn")
out = []
for preset, dtype in (("qwen2.5-1.5b", "f16"), ("qwen2.5-1.5b", "q4_0"), ("qwen2.5-0.5b", "f16")):
    b = DecodeBench(g, preset, dtype)
    base = start_tuning(g, preset, ("persist=264",))
    for name, t in {"off": dataclasses.replace(base, persist=0),
                    "all 5 persistent": base,
                    "from O": dataclasses.replace(base, persist_from=2)}.items():
        us = b.step_gpu(t) * 1e6
        b.tok_s()
        tok = b.tok_s(128)
        row = {"preset": preset, "dtype": dtype, "variant": name, "persist": b.tf.tuning.persist,
               "note": b.tf.persist_note, "step_gpu_us": us, "tg128_tok_s": tok}
        out.append(row)
        print(f"{preset} {dtype:5s} {name:17s} persist={b.tf.tuning.persist:3d} step {us:7.1f} us  tg128 {tok:6.1f}", flush=True)
json.dump(out, open(os.environ["OUT"] + "/round63_persist_from.json", "w"), indent=1)
PY
