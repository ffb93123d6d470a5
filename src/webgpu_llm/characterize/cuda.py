"""Item 6: CUDA kernel-launch overhead through torch, the native reference for the same patterns.

- `naive`: one tiny kernel (`x.add_(1)` on one element), then `torch.cuda.synchronize()`; repeated.
- `sequential`: N such launches, one synchronize (CUDA needs no submit: the launch is it).
- `graph`: the N launches captured once in a CUDA graph and replayed — CUDA's `batched`.

torch is imported only here and only when asked, since it is optional.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from .config import Config
from .harness import Progress, no_gc
from .stats import summarize


def measure_cuda(cfg: Config, progress: Progress) -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        return {"available": False, "note": "torch is not installed: CUDA reference skipped"}
    import torch

    if not torch.cuda.is_available():
        return {"available": False, "torch": torch.__version__,
                "note": "torch.cuda.is_available() is False: CUDA reference skipped"}
    dev = torch.device("cuda")
    x = torch.zeros(1, device=dev)
    n, nb = cfg.dispatches, cfg.naive_block
    pc, sync = time.perf_counter, torch.cuda.synchronize
    progress(f"cuda: launch overhead through torch {torch.__version__} "
             f"({cfg.warmup} warm-up + {cfg.reps} rounds, N={n})")

    def naive() -> float:
        t0 = pc()
        for _ in range(nb):
            x.add_(1)
            sync()
        return (pc() - t0) / nb

    def sequential() -> float:
        t0 = pc()
        for _ in range(n):
            x.add_(1)
        sync()
        return (pc() - t0) / n

    graph_fn = _graph(torch, x, n)
    samples: dict[str, list[float]] = {"naive": [], "sequential": [], "graph": []}
    fns = {"naive": naive, "sequential": sequential}
    if graph_fn is not None:
        fns["graph"] = graph_fn
    with no_gc():
        for r in range(cfg.warmup + cfg.reps):
            for k, fn in fns.items():
                dt = fn()
                if r >= cfg.warmup:
                    samples[k].append(dt)
    methods: dict[str, Any] = {}
    for k, v in samples.items():
        if v:
            methods[k] = {"per_dispatch_us": summarize(v, 1e6),
                          "dispatches_per_sample": nb if k == "naive" else n}
    out: dict[str, Any] = {
        "available": True,
        "device": torch.cuda.get_device_name(dev),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "kernel": "x.add_(1) on a 1-element float32 tensor",
        "methods": methods,
    }
    if graph_fn is None:
        out["note"] = "CUDA graph capture failed: `graph` row absent"
    return out


def _graph(torch: Any, x: Any, n: int) -> Any:
    """A sampler replaying n captured launches, or None where graph capture fails."""
    try:
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):  # warm up on a side stream, as capture requires
            for _ in range(3):
                x.add_(1)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(n):
                x.add_(1)
    except Exception:
        return None
    pc, sync = time.perf_counter, torch.cuda.synchronize

    def replay() -> float:
        t0 = pc()
        g.replay()
        sync()
        return (pc() - t0) / n

    return replay
