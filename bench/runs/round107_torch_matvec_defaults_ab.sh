#!/usr/bin/env bash
# Round 107: the new mat-vec defaults (columns_per_group: 4 columns a workgroup from 1024
# columns, 16 for gated mat-vecs) against the old ones (2 below 4096 columns, gated as plain),
# the whole compiled decode step's GPU time, alternated 3 times in one process per model and
# dtype (old = the old default shapes set for every role whose default changed). Dawn.
set -u
cat > /tmp/ab.py <<'PY'
import json, os, sys, warnings
sys.path.insert(0, "bench")
import torch_generate as tg, torch_step_sweep as sw
import webgpu_llm.torch as wt
from webgpu_llm.torch.kernels import fused_linear as fl
warnings.simplefilter("ignore")
wt.set_backend("dawn")

def old(n):  # the defaults before round 107
    for c in (32, 16, 8, 4):
        if n // c >= 1024:
            return c
    return 2

rows = []
for model in ("qwen2.5-0.5b", "qwen2.5-1.5b"):
    cfg = dict(tg.MODELS[model])
    for dname in ("f16", "f32"):
        m, prompt = sw.compiled_model(cfg, dname)
        before = {key: (256, old(key[0])) for role, key in sw.roles(cfg).items()
                  if fl.default_shape(*key, role == "gate_up") != (256, old(key[0]))}
        t = sw.alternate(m, prompt, {"old": lambda: fl.set_shapes(before), "new": lambda: fl.set_shapes({})})
        r = {"run": f"{model} {dname}", "changed": {f"{k}": v for k, v in before.items()},
             **{f"{k}_us": v for k, v in t.items()}}
        rows.append(r)
        print(json.dumps(r), flush=True)
        del m
sw.ab_table(rows, "run", os.environ["OUT"] + "/ab.json")
PY
timeout 560 python3 /tmp/ab.py
