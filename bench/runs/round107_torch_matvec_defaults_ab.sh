#!/usr/bin/env bash
# Round 107: the new mat-vec defaults (columns_per_group: 4 columns a workgroup from 1024
# columns, 16 for gated mat-vecs) against the old ones (2 below 4096 columns, gated as plain),
# the whole compiled decode step's GPU time, alternated 3 times in one process per model and
# dtype (old = the old default shapes set for every role whose default changed). Dawn.
set -u
cat > /tmp/ab.py <<'PY'
import json, os, statistics, sys, warnings
sys.path.insert(0, "bench")
import torch, torch_generate as tg, torch_step_sweep as sw
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
    prompt = torch.randint(0, cfg["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(1)).to("webgpu")
    for dname in ("f16", "f32"):
        m = tg.build(cfg, tg.DTYPES[dname])
        torch._dynamo.reset()
        tg.compile_forward(m)
        for _ in range(2):
            tg.timed_generate(m, prompt, 4, cache_implementation="static")
        before = {key: (256, old(key[0])) for role, key in sw.roles(cfg).items()
                  if fl.default_shape(*key, role == "gate_up") != (256, old(key[0]))}
        t = {"old": [], "new": []}
        for _ in range(3):
            for name, shapes in (("old", before), ("new", {})):
                fl.set_shapes(shapes)
                t[name].append(sw.step_us(m, prompt, 30)[0])
        fl.set_shapes({})
        r = {"model": model, "dtype": dname, "changed": {f"{k}": v for k, v in before.items()},
             **{f"{k}_us": v for k, v in t.items()}}
        rows.append(r)
        print(json.dumps(r), flush=True)
        del m
json.dump(rows, open(os.environ["OUT"] + "/ab.json", "w"), indent=1)
print("\n| model | dtype | old step µs | new step µs | change |\n| --- | --- | --- | --- | --- |")
for r in rows:
    o, n = statistics.median(r["old_us"]), statistics.median(r["new_us"])
    print(f"| {r['model']} | {r['dtype']} | {o:.1f} | {n:.1f} | {100 * (n / o - 1):+.1f} % |")
PY
timeout 560 python3 /tmp/ab.py
