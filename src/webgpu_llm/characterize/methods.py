"""Items 1–3 of the protocol: the three ways of measuring per-dispatch cost, plus our fast path.

- `naive`: one dispatch, submit, wait — repeated (the single-op benchmark of the literature).
- `sequential`: N dispatches, each with its own encoder, pass and submit; one wait at the end.
- `batched`: N dispatches in one encoder and one compute pass, one submit, one wait.

These three go through the `wgpu` Python wrapper's calls, as any user of the API would.
`sequential_native` and `batched_native` replay the same dispatches through `Program`
(`run_per_dispatch()` / `run()`), whose per-dispatch calls go straight to the C API
(runtime/native.py): the difference is what the wrapper costs. Every variant sets a pipeline
and a bind group for every dispatch (the pipelines alternate), so all do the same API work.

The methods are sampled in interleaved rounds, so slow drift (thermal, other processes)
affects them all alike. A sample's value is its wall time divided by its dispatch count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .harness import Bench, no_gc
from .stats import summarize

METHODS = ("naive", "sequential", "batched", "sequential_native", "batched_native")

DESCRIPTIONS = {
    "naive": "one dispatch, submit, wait; repeated (wgpu Python API)",
    "sequential": "N dispatches, each its own encoder + pass + submit, one wait (wgpu Python API)",
    "batched": "N dispatches in one encoder and one compute pass, one submit, one wait (wgpu Python API)",
    "sequential_native": "as sequential, per-dispatch calls through the native fast path (Program.run_per_dispatch)",
    "batched_native": "as batched, per-dispatch calls through the native fast path (Program.run)",
}
API = {"naive": "wrapper", "sequential": "wrapper", "batched": "wrapper",
       "sequential_native": "native", "batched_native": "native"}


def _samplers(b: Bench) -> dict[str, tuple[Callable[[], float], int]]:
    """Each method as (one timed sample returning seconds, dispatches per sample)."""
    dev, queue, wait = b.gpu.device, b.gpu.queue, b.wait
    disp = [(d.pipeline, d.bind_group) for d in b.dispatches]
    naive_disp = disp[: b.cfg.naive_block]
    pc = time.perf_counter

    def naive() -> float:
        t0 = pc()
        for pipe, bg in naive_disp:
            enc = dev.create_command_encoder()
            cp = enc.begin_compute_pass()
            cp.set_pipeline(pipe)
            cp.set_bind_group(0, bg)
            cp.dispatch_workgroups(1, 1, 1)
            cp.end()
            queue.submit([enc.finish()])
            wait()
        return pc() - t0

    def sequential() -> float:
        t0 = pc()
        for pipe, bg in disp:
            enc = dev.create_command_encoder()
            cp = enc.begin_compute_pass()
            cp.set_pipeline(pipe)
            cp.set_bind_group(0, bg)
            cp.dispatch_workgroups(1, 1, 1)
            cp.end()
            queue.submit([enc.finish()])
        wait()
        return pc() - t0

    def batched() -> float:
        t0 = pc()
        enc = dev.create_command_encoder()
        cp = enc.begin_compute_pass()
        for pipe, bg in disp:
            cp.set_pipeline(pipe)
            cp.set_bind_group(0, bg)
            cp.dispatch_workgroups(1, 1, 1)
        cp.end()
        queue.submit([enc.finish()])
        wait()
        return pc() - t0

    prog = b.program
    prog.run()  # builds the Program's raw-handle list outside the timed region
    wait()

    def sequential_native() -> float:
        t0 = pc()
        prog.run_per_dispatch()
        wait()
        return pc() - t0

    def batched_native() -> float:
        t0 = pc()
        prog.run()
        wait()
        return pc() - t0

    n = len(disp)
    return {
        "naive": (naive, len(naive_disp)),
        "sequential": (sequential, n),
        "batched": (batched, n),
        "sequential_native": (sequential_native, n),
        "batched_native": (batched_native, n),
    }


def measure_methods(b: Bench) -> dict[str, Any]:
    cfg = b.cfg
    samplers = _samplers(b)
    samples: dict[str, list[float]] = {m: [] for m in METHODS}
    b.reset_counters()
    b.progress(f"{b.gpu.backend}: methods {', '.join(METHODS)} "
               f"({cfg.warmup} warm-up + {cfg.method_reps} rounds, N={cfg.dispatches})")
    with no_gc():
        for r in range(cfg.warmup + cfg.method_reps):
            for m in METHODS:
                fn, count = samplers[m]
                dt = fn()
                b.expected += count
                if r >= cfg.warmup:
                    samples[m].append(dt / count)
    verified = b.check_counters("methods")
    out: dict[str, Any] = {}
    for m in METHODS:
        _, count = samplers[m]
        out[m] = {
            "per_dispatch_us": summarize(samples[m], 1e6),
            "dispatches_per_sample": count,
            "api": API[m],
            "description": DESCRIPTIONS[m],
            "verified": verified,
        }
    return out
