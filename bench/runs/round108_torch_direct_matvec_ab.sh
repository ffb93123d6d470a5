#!/usr/bin/env bash
# Round 108: mat-vecs that read x beside the weights (no staging) past the staging limit of
# 7168 inputs: the 1.5B's down projection (8960 inputs) was a one-row tiled matmul, now the
# mat-vec. Old (the limit applied to every mat-vec) against new, the compiled decode step's
# GPU time, alternated 3 times in one process per dtype, Qwen2.5-1.5B shape. Dawn.
set -u
cat > /tmp/ab.py <<'PY'
import json, os, sys, warnings
sys.path.insert(0, "bench")
import torch_generate as tg, torch_step_sweep as sw
import webgpu_llm.torch as wt
from webgpu_llm.torch.kernels import fused_linear as fl
warnings.simplefilter("ignore")
wt.set_backend("dawn")
fit = fl._weights_fit

def use(f):
    fl._weights_fit = f

rows = []
for dname in ("f16", "f32"):
    m, prompt = sw.compiled_model(dict(tg.MODELS["qwen2.5-1.5b"]), dname)
    # old: the staging limit applied to every mat-vec
    t = sw.alternate(m, prompt, {"old": lambda: use(lambda k, ws, staged=True: fit(k, ws, True)),
                                 "new": lambda: use(fit)})
    use(fit)
    r = {"dtype": dname, **{f"{k}_us": v for k, v in t.items()}}
    rows.append(r)
    print(json.dumps(r), flush=True)
    del m
sw.ab_table(rows, "dtype", os.environ["OUT"] + "/ab.json")
PY
timeout 560 python3 /tmp/ab.py
