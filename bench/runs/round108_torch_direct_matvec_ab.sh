#!/usr/bin/env bash
# Round 108: mat-vecs that read x beside the weights (no staging) past the staging limit of
# 7168 inputs: the 1.5B's down projection (8960 inputs) was a one-row tiled matmul, now the
# mat-vec. Old (the limit applied to every mat-vec) against new, the compiled decode step's
# GPU time, alternated 3 times in one process per dtype, Qwen2.5-1.5B shape. Dawn.
set -u
cat > /tmp/ab.py <<'PY'
import json, os, statistics, sys, warnings
sys.path.insert(0, "bench")
import torch, torch_generate as tg, torch_step_sweep as sw
import webgpu_llm.torch as wt
from webgpu_llm.torch.kernels import fused_linear as fl
warnings.simplefilter("ignore")
wt.set_backend("dawn")
fit = fl._weights_fit
rows = []
cfg = dict(tg.MODELS["qwen2.5-1.5b"])
prompt = torch.randint(0, cfg["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(1)).to("webgpu")
for dname in ("f16", "f32"):
    m = tg.build(cfg, tg.DTYPES[dname])
    torch._dynamo.reset()
    tg.compile_forward(m)
    for _ in range(2):
        tg.timed_generate(m, prompt, 4, cache_implementation="static")
    t = {"old": [], "new": []}
    n = {}
    for _ in range(3):
        for name in ("old", "new"):
            fl._weights_fit = (lambda k, ws, staged=True: fit(k, ws, True)) if name == "old" else fit
            fl.set_shapes({})  # (clears the launch plans)
            us, n[name] = sw.step_us(m, prompt, 30)
            t[name].append(us)
    fl._weights_fit = fit
    r = {"dtype": dname, "dispatches": n, **{f"{k}_us": v for k, v in t.items()}}
    rows.append(r)
    print(json.dumps(r), flush=True)
    del m
json.dump(rows, open(os.environ["OUT"] + "/ab.json", "w"), indent=1)
print("\n| dtype | old step µs | new step µs | change |\n| --- | --- | --- | --- |")
for r in rows:
    o, n = statistics.median(r["old_us"]), statistics.median(r["new_us"])
    print(f"| {r['dtype']} | {o:.1f} | {n:.1f} | {100 * (n / o - 1):+.1f} % |")
PY
timeout 560 python3 /tmp/ab.py
