"""Item 5: a kernel-size sweep from trivial to bandwidth-bound, GPU time beside wall time.

At each size the `reduce` kernel streams the bytes once per dispatch, in two patterns:
`single` (one dispatch, one pass, submit, wait — the naive pattern) and `batched`
(`cfg.sweep_batch` dispatches in one pass, one submit, wait; reported per dispatch). Each
pass carries timestamp writes, so GPU time comes from the GPU's own clock. Where GPU time
per dispatch overtakes a method's per-dispatch cost, that method's overhead stops dominating.
Small sizes stay in the GPU's cache across the repeated dispatches; large ones stream.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from .harness import Bench, no_gc
from .kernels import REDUCE, REDUCE_MAX_WORKGROUPS, reduce_workgroups
from .stats import summarize

PATTERNS = ("single", "batched")


def sweep_sizes(b: Bench) -> tuple[list[int], list[str]]:
    """The sizes this adapter can take, and a note for each one dropped."""
    cfg, g = b.cfg, b.gpu
    cap = g.max_binding
    why = "the adapter's storage-binding limit"
    if str(g.info.get("adapter_type", "")).lower() == "cpu" and cfg.sweep_cpu_max_bytes < cap:
        cap, why = cfg.sweep_cpu_max_bytes, "the cap for CPU adapters (sweep_cpu_max_bytes)"
    sizes = [s for s in cfg.sweep_bytes if s <= cap]
    notes = [f"skipped {s} bytes: over {why} ({cap} bytes)" for s in cfg.sweep_bytes if s > cap]
    return sizes, notes


def measure_sweep(b: Bench) -> dict[str, Any]:
    g, cfg, wait = b.gpu, b.cfg, b.wait
    sizes, notes = sweep_sizes(b)
    if not sizes:
        return {"points": [], "notes": notes, "timestamps": g.has_timestamps}
    dev, queue = g.device, g.queue
    src = g.upload(np.ones(max(sizes) // 4, np.float32), "sweep-src")
    dst = g.buffer(4 * REDUCE_MAX_WORKGROUPS, "sweep-dst")
    pipe = g.pipeline(REDUCE.wgsl, REDUCE.name)
    ts = g.has_timestamps
    if not ts:
        notes.append("no timestamp-query feature on this adapter: GPU times are absent")
    rounds = cfg.warmup + cfg.reps
    points: list[dict[str, Any]] = []
    quanta: list[int] = []
    b.progress(f"{g.backend}: kernel-size sweep, {len(sizes)} sizes "
               f"{_fmt_bytes(sizes[0])}..{_fmt_bytes(sizes[-1])}")
    for size in sizes:
        bg = g.bind_group(pipe, [(src, 0, size), dst])
        wg = reduce_workgroups(size)
        counts = {"single": 1, "batched": cfg.sweep_batch}
        wall: dict[str, list[float]] = {p: [] for p in PATTERNS}
        qsets = {p: dev.create_query_set(type="timestamp", count=2 * rounds) for p in PATTERNS} if ts else {}
        with no_gc():
            for r in range(rounds):
                for p in PATTERNS:
                    t0 = time.perf_counter()
                    enc = dev.create_command_encoder()
                    tw = ({"query_set": qsets[p], "beginning_of_pass_write_index": 2 * r,
                           "end_of_pass_write_index": 2 * r + 1} if ts else None)
                    cp = enc.begin_compute_pass(timestamp_writes=tw) if tw else enc.begin_compute_pass()
                    cp.set_pipeline(pipe)
                    cp.set_bind_group(0, bg)
                    for _ in range(counts[p]):
                        cp.dispatch_workgroups(wg, 1, 1)
                    cp.end()
                    queue.submit([enc.finish()])
                    wait()
                    wall[p].append((time.perf_counter() - t0) / counts[p])
        gpu_s = ({p: _resolve(b, qsets[p], rounds, quanta)[cfg.warmup:] / counts[p] for p in PATTERNS}
                 if ts else {})
        ok = _check_sum(b, dst, wg, size)
        point: dict[str, Any] = {"bytes": size, "workgroups": wg, "verified": ok}
        for p in PATTERNS:
            point[p] = {
                "dispatches_per_sample": counts[p],
                "wall_us": summarize(wall[p][cfg.warmup:], 1e6),
                "gpu_us": summarize(list(gpu_s[p]), 1e6) if ts else None,
            }
        gpu_med = point["batched"]["gpu_us"]["median"] if ts else None
        point["gbps"] = round(size / (gpu_med * 1e-6) / 1e9, 3) if gpu_med else None
        points.append(point)
        b.progress(f"{g.backend}:   {_fmt_bytes(size):>8}: wall {point['single']['wall_us']['median']:.1f} µs"
                   + (f", GPU {gpu_med:.1f} µs/dispatch ({point['gbps']:.1f} GB/s)" if gpu_med else ""))
    quantum = int(np.gcd.reduce(quanta)) if quanta else None
    if quantum and quantum >= 1000:
        notes.append(f"GPU timestamps advance in steps of {quantum} ns: small GPU times are coarse")
    return {"points": points, "notes": notes, "timestamps": ts, "timestamp_quantum_ns": quantum,
            "kernel": REDUCE.name, "dtype": "vec4<f32>", "batch": cfg.sweep_batch}


def _resolve(b: Bench, qs: Any, count_pairs: int, quanta: list[int]) -> np.ndarray:
    """Seconds between each begin/end pair of a timestamp query set (WebGPU ticks are ns).

    Appends the gcd of the raw differences to `quanta`: a large one means quantized timers.
    """
    g = b.gpu
    n = 2 * count_pairs
    buf = g.buffer(8 * n, "timestamps", g.usage.QUERY_RESOLVE | g.usage.COPY_SRC)
    enc = g.device.create_command_encoder()
    enc.resolve_query_set(qs, 0, n, buf, 0)
    g.submit([enc.finish()])
    b.wait()
    raw = np.frombuffer(g.read(buf, 0, 8 * n), dtype=np.uint64).astype(np.int64)
    d = np.maximum(raw[1::2] - raw[0::2], 0)
    if d.any():
        quanta.append(int(np.gcd.reduce(d[d > 0])))
    return d.astype(np.float64) * 1e-9


def _check_sum(b: Bench, dst: Any, wg: int, size: int) -> bool:
    """Every float of the source is 1, so the partial sums must add up to the float count."""
    b.wait()
    got = float(b.gpu.read_array(dst, np.float32, wg).astype(np.float64).sum())
    want = size / 4
    if not math.isclose(got, want, rel_tol=1e-6):
        b.progress(f"warning: reduce over {size} bytes summed to {got}, expected {want}")
        return False
    return True


def _fmt_bytes(n: int) -> str:
    for unit, div in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= div:
            return f"{n / div:.3g} {unit}"
    return f"{n} B"
