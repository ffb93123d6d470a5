"""Host µs per eager ATen call on the torch `webgpu` device, beside the same call on the CPU.

An eager decode token is ~1000 planned launches and ~370 views (docs/performance.md),
so a µs per call is ~1.4 ms a token. The stream's submits are dropped: what is timed is the
dispatcher's call into Python and our op path (signature, plan, allocation, queued launch),
not the GPU. The shapes are a width-64 decode step's; the CPU column is the floor a backend
with C++ kernels pays for the same call.

    python bench/torch_op_cost.py                 # table
    python bench/torch_op_cost.py --json ops.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import webgpu_llm  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch
import torch.nn.functional as F
from torch_host_cost import drop_submits

import webgpu_llm.torch as wt


def best_us(fn: Callable[[], Any], n: int, rounds: int = 5) -> float:
    """Best of `rounds` mean µs per call over n calls (after a warm-up that builds the plans)."""
    for _ in range(min(n, 200)):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def calls(dev: str, dtype: torch.dtype) -> dict[str, Callable[[], Any]]:
    g = torch.Generator().manual_seed(0)
    x, y = (torch.randn(1, 1, 64, generator=g).to(dtype).to(dev) for _ in range(2))
    w = torch.randn(128, 64, generator=g).to(dtype).to(dev)
    return {
        "add": lambda: x + y,
        "mul by a scalar": lambda: x * 0.5,
        "linear": lambda: F.linear(x, w),
        "silu": lambda: F.silu(x),
        "mean": lambda: x.mean(-1, keepdim=True),
        "to float32": lambda: x.to(torch.float32),
        "view": lambda: x.view(1, 64),
        "transpose": lambda: x.transpose(1, 2),
        "slice": lambda: x[..., :32],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="dawn", choices=["wgpu", "dawn"])
    ap.add_argument("--dtype", default="f16", choices=["f16", "f32"])
    ap.add_argument("--n", type=int, default=20000, help="calls per timed round")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    wt.set_backend(args.backend)
    if not wt.is_available():
        sys.exit("no WebGPU adapter")
    stream = wt.context.ctx().stream
    dtype = {"f16": torch.float16, "f32": torch.float32}[args.dtype]
    rows = {}
    cpu = calls("cpu", dtype)
    drop_submits(stream)  # queued launches are forgotten, never submitted
    try:
        dev = calls("webgpu", dtype)
        for name in cpu:
            rows[name] = {"webgpu_us": best_us(dev[name], args.n), "cpu_us": best_us(cpu[name], args.n)}
    finally:
        del stream.flush
    print(f"| op ({args.dtype}, 1 x 64) | webgpu µs | CPU µs |")
    print("| --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['webgpu_us']:.2f} | {r['cpu_us']:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"backend": args.backend, "dtype": args.dtype, "torch": torch.__version__, "ops": rows}, f, indent=1)


if __name__ == "__main__":
    main()
