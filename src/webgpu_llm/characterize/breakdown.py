"""Item 4: what each API call of a dispatch costs on the CPU.

The calls of a dispatch are timed in place, inside the real patterns: a `sequential` run (each
dispatch its own encoder, pass and submit; one wait at the end) with a timestamp between every
two calls, and a batched pass whose per-dispatch calls go through the native C entry points
that `Program` uses (rows `*_native`). Their sum per dispatch can thus be set against the
measured cost of the whole pattern. The other calls (wait, write_buffer, bind-group creation,
read-back) are timed alone, with whatever they need made outside the bracket. The median cost
of one `perf_counter_ns()` is subtracted from every interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..runtime.native import handle, pass_calls
from .harness import Bench, no_gc
from .stats import summarize, timer_overhead_ns

# (row, what it times); the first eight are one sequential dispatch, in order.
CALLS: tuple[tuple[str, str], ...] = (
    ("create_encoder", "device.create_command_encoder()"),
    ("begin_pass", "encoder.begin_compute_pass()"),
    ("set_pipeline", "pass.set_pipeline()"),
    ("set_bind_group", "pass.set_bind_group()"),
    ("dispatch", "pass.dispatch_workgroups(1, 1, 1)"),
    ("end_pass", "pass.end()"),
    ("finish", "encoder.finish()"),
    ("submit", "queue.submit([command buffer])"),
    ("set_pipeline_native", "wgpuComputePassEncoderSetPipeline (native fast path, in a batched pass)"),
    ("set_bind_group_native", "wgpuComputePassEncoderSetBindGroup (native fast path, in a batched pass)"),
    ("dispatch_native", "wgpuComputePassEncoderDispatchWorkgroups (native fast path, in a batched pass)"),
    ("wait", "wait for the GPU after one submitted dispatch"),
    ("write_buffer", "queue.write_buffer(64 bytes)"),
    ("create_bind_group", "device.create_bind_group(1 storage binding)"),
    ("readback_round_trip", "dispatch + copy 4 B to a mapped buffer + submit + map_sync + read + unmap"),
    ("read_buffer", "queue.read_buffer(4 bytes) (the wrapper's convenience: makes a staging buffer)"),
)
SEQUENTIAL_PARTS = ("create_encoder", "begin_pass", "set_pipeline", "set_bind_group", "dispatch",
                    "end_pass", "finish", "submit")
BATCHED_PARTS = ("set_pipeline", "set_bind_group", "dispatch")
BATCHED_NATIVE_PARTS = ("set_pipeline_native", "set_bind_group_native", "dispatch_native")
_SLOW = ("wait", "readback_round_trip", "read_buffer")

# m calls (or dispatches) -> total ns per row
Timer = Callable[[int], dict[str, int]]


def _timers(b: Bench) -> dict[str, Timer]:
    """Each timer covers one or more rows: the sequential run covers eight at once."""
    g, wait = b.gpu, b.wait
    dev, queue = g.device, g.queue
    pc = time.perf_counter_ns
    pool = b.pool
    disp = [(d.pipeline, d.bind_group) for d in pool]
    raw = [(handle(d.pipeline), handle(d.bind_group)) for d in pool]
    record = _recorder(b)
    native = pass_calls(g.backend)
    n_set_pipe, n_set_bg, n_disp, null = native.set_pipeline, native.set_bind_group, native.dispatch, native.null
    scratch = g.buffer(256, "scratch")
    payload = np.arange(16, dtype=np.uint32).tobytes()
    layout = pool[0].pipeline.get_bind_group_layout(0)
    entries = [{"binding": 0, "resource": {"buffer": b.counter, "offset": 0, "size": 4}}]
    u = g.usage
    mapbuf = dev.create_buffer(size=256, usage=u.MAP_READ | u.COPY_DST, label="readback")
    read_mode = g.mod.MapMode.READ

    def sequential(m: int) -> dict[str, int]:
        t = [0] * 8
        cce, sub = dev.create_command_encoder, queue.submit
        for i in range(m):
            pipe, bg = disp[i % len(disp)]
            t0 = pc()
            enc = cce()
            t1 = pc()
            cp = enc.begin_compute_pass()
            t2 = pc()
            cp.set_pipeline(pipe)
            t3 = pc()
            cp.set_bind_group(0, bg)
            t4 = pc()
            cp.dispatch_workgroups(1, 1, 1)
            t5 = pc()
            cp.end()
            t6 = pc()
            cb = enc.finish()
            t7 = pc()
            sub([cb])
            t8 = pc()
            for k, d in enumerate((t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5, t7 - t6, t8 - t7)):
                t[k] += d
        wait()
        b.expected += m
        return dict(zip(SEQUENTIAL_PARTS, t))

    def batched_native(m: int) -> dict[str, int]:
        enc = dev.create_command_encoder()
        cp = enc.begin_compute_pass()
        p = handle(cp)
        a = c = d = 0
        for i in range(m):
            pipe, bg = raw[i % len(raw)]
            t0 = pc()
            n_set_pipe(p, pipe)
            t1 = pc()
            n_set_bg(p, 0, bg, 0, null)
            t2 = pc()
            n_disp(p, 1, 1, 1)
            t3 = pc()
            a, c, d = a + t1 - t0, c + t2 - t1, d + t3 - t2
        cp.end()
        queue.submit([enc.finish()])
        wait()
        b.expected += m
        return dict(zip(BATCHED_NATIVE_PARTS, (a, c, d)))

    def wait_one(m: int) -> dict[str, int]:
        tot = 0
        for i in range(m):
            queue.submit([record(i)])
            t0 = pc()
            wait()
            tot += pc() - t0
        b.expected += m
        return {"wait": tot}

    def write_buffer(m: int) -> dict[str, int]:
        tot, wb = 0, queue.write_buffer
        for _ in range(m):
            t0 = pc()
            wb(scratch, 0, payload)
            tot += pc() - t0
        return {"write_buffer": tot}

    def create_bind_group(m: int) -> dict[str, int]:
        keep, tot, f = [], 0, dev.create_bind_group
        for _ in range(m):
            t0 = pc()
            bg = f(layout=layout, entries=entries)
            tot += pc() - t0
            keep.append(bg)  # released after the loop, outside the brackets
        return {"create_bind_group": tot}

    def readback(m: int) -> dict[str, int]:
        tot = 0
        for i in range(m):
            pipe, bg = disp[i % len(disp)]
            t0 = pc()
            enc = dev.create_command_encoder()
            cp = enc.begin_compute_pass()
            cp.set_pipeline(pipe)
            cp.set_bind_group(0, bg)
            cp.dispatch_workgroups(1, 1, 1)
            cp.end()
            enc.copy_buffer_to_buffer(b.counter, 0, mapbuf, 0, 4)
            queue.submit([enc.finish()])
            mapbuf.map_sync(read_mode, 0, 4)
            mapbuf.read_mapped(0, 4)
            mapbuf.unmap()
            tot += pc() - t0
        b.expected += m
        return {"readback_round_trip": tot}

    def read_buffer(m: int) -> dict[str, int]:
        tot, rb = 0, queue.read_buffer
        for _ in range(m):
            t0 = pc()
            rb(scratch, 0, 4)
            tot += pc() - t0
        return {"read_buffer": tot}

    return {
        "sequential": sequential,
        "batched_native": batched_native,
        "wait": wait_one,
        "write_buffer": write_buffer,
        "create_bind_group": create_bind_group,
        "readback_round_trip": readback,
        "read_buffer": read_buffer,
    }


def _recorder(b: Bench) -> Callable[[int], Any]:
    """A function returning a freshly recorded command buffer with one trivial dispatch."""
    dev, pool = b.gpu.device, b.pool

    def record(i: int) -> Any:
        d = pool[i % len(pool)]
        enc = dev.create_command_encoder()
        cp = enc.begin_compute_pass()
        cp.set_pipeline(d.pipeline)
        cp.set_bind_group(0, d.bind_group)
        cp.dispatch_workgroups(1, 1, 1)
        cp.end()
        return enc.finish()

    return record


def measure_breakdown(b: Bench) -> dict[str, Any]:
    cfg = b.cfg
    timers = _timers(b)
    overhead = timer_overhead_ns()
    samples: dict[str, list[float]] = {k: [] for k, _ in CALLS}
    b.reset_counters()
    b.progress(f"{b.gpu.backend}: per-call breakdown ({len(CALLS)} calls, "
               f"{cfg.warmup} warm-up + {cfg.reps} rounds)")
    with no_gc():
        for r in range(cfg.warmup + cfg.reps):
            for name, timer in timers.items():
                m = cfg.readback_block if name in _SLOW else cfg.call_block
                totals = timer(m)
                if r >= cfg.warmup:
                    for row, tot in totals.items():
                        samples[row].append(max(0.0, (tot - m * overhead) / m) * 1e-9)
    verified = b.check_counters("breakdown")
    out: dict[str, Any] = {}
    for name, what in CALLS:
        out[name] = {"us": summarize(samples[name], 1e6), "what": what,
                     "api": "native" if name.endswith("_native") else "wrapper"}
    return {"calls": out, "timer_overhead_ns": overhead, "verified": verified}
