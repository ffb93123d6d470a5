"""Item 4: what each API call of a dispatch costs on the CPU, one call at a time.

Only the call itself sits inside the `perf_counter_ns` bracket; whatever it needs (an open
encoder, a recorded command buffer) is made outside it, and results are kept alive until the
sample ends so that releasing them is not timed either. The median cost of an empty bracket
is subtracted. The three per-dispatch pass calls are also timed through the native C entry
points that `Program` uses (rows `*_native`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..runtime.native import _ffi_module
from .harness import Bench, no_gc
from .stats import median, summarize, timer_overhead_ns

# (row, what it times); the order is the order of the calls in one sequential dispatch.
CALLS: tuple[tuple[str, str], ...] = (
    ("create_encoder", "device.create_command_encoder()"),
    ("begin_pass", "encoder.begin_compute_pass()"),
    ("set_pipeline", "pass.set_pipeline()"),
    ("set_bind_group", "pass.set_bind_group()"),
    ("dispatch", "pass.dispatch_workgroups(1, 1, 1)"),
    ("end_pass", "pass.end()"),
    ("finish", "encoder.finish()"),
    ("submit", "queue.submit([one command buffer with one dispatch])"),
    ("wait", "wait for the GPU after one submitted dispatch"),
    ("set_pipeline_native", "wgpuComputePassEncoderSetPipeline (native fast path)"),
    ("set_bind_group_native", "wgpuComputePassEncoderSetBindGroup (native fast path)"),
    ("dispatch_native", "wgpuComputePassEncoderDispatchWorkgroups (native fast path)"),
    ("write_buffer", "queue.write_buffer(64 bytes)"),
    ("create_bind_group", "device.create_bind_group(1 storage binding)"),
    ("readback_round_trip", "dispatch + copy 4 B to a mapped buffer + submit + map_sync + read + unmap"),
    ("read_buffer", "queue.read_buffer(4 bytes) (the wrapper's convenience: makes a staging buffer)"),
)
SEQUENTIAL_PARTS = ("create_encoder", "begin_pass", "set_pipeline", "set_bind_group", "dispatch",
                    "end_pass", "finish", "submit")
BATCHED_PARTS = ("set_pipeline", "set_bind_group", "dispatch")
BATCHED_NATIVE_PARTS = ("set_pipeline_native", "set_bind_group_native", "dispatch_native")

Timer = Callable[[int], tuple[int, list[Any]]]  # m calls -> (total ns, objects to keep alive)


def _timers(b: Bench) -> dict[str, Timer]:
    g, wait = b.gpu, b.wait
    dev, queue = g.device, g.queue
    pc = time.perf_counter_ns
    pool = b.pool
    pipes = [d.pipeline for d in pool[:2]]
    bgs = [d.bind_group for d in pool]
    cb_one = _recorder(b)
    ffi_mod = _ffi_module(g.backend)
    lib, null = ffi_mod.lib, ffi_mod.ffi.NULL
    n_set_pipe, n_set_bg, n_disp = (lib.wgpuComputePassEncoderSetPipeline,
                                    lib.wgpuComputePassEncoderSetBindGroup,
                                    lib.wgpuComputePassEncoderDispatchWorkgroups)
    scratch = g.buffer(256, "scratch")
    payload = np.arange(16, dtype=np.uint32).tobytes()
    layout = pipes[0].get_bind_group_layout(0)
    entries = [{"binding": 0, "resource": {"buffer": b.counter, "offset": 0, "size": 4}}]
    u = g.usage
    mapbuf = dev.create_buffer(size=256, usage=u.MAP_READ | u.COPY_DST, label="readback")
    read_mode = g.mod.MapMode.READ

    def open_pass() -> tuple[Any, Any]:
        enc = dev.create_command_encoder()
        return enc, enc.begin_compute_pass()

    def create_encoder(m: int) -> tuple[int, list[Any]]:
        keep, tot, f = [], 0, dev.create_command_encoder
        for _ in range(m):
            t0 = pc()
            e = f()
            tot += pc() - t0
            keep.append(e)
        return tot, keep

    def begin_pass(m: int) -> tuple[int, list[Any]]:
        keep, tot = [], 0
        for _ in range(m):
            enc = dev.create_command_encoder()
            t0 = pc()
            cp = enc.begin_compute_pass()
            tot += pc() - t0
            cp.end()
            keep.append(enc.finish())
        return tot, keep

    extra = _lambda_overhead_ns()

    def in_pass(call: Callable[[Any, int], None], prepare: Callable[[Any], None] | None = None) -> Timer:
        """Times `call(pass, i)` inside one open pass; the cost of calling a lambda is removed."""
        def timer(m: int) -> tuple[int, list[Any]]:
            enc, cp = open_pass()
            if prepare:
                prepare(cp)
            tot = 0
            for i in range(m):
                t0 = pc()
                call(cp, i)
                tot += pc() - t0
            cp.end()
            return round(tot - m * extra), [enc.finish()]  # never submitted
        return timer

    def bound(cp: Any) -> None:
        cp.set_pipeline(pipes[0])
        cp.set_bind_group(0, bgs[0])

    def end_pass(m: int) -> tuple[int, list[Any]]:
        keep, tot = [], 0
        for _ in range(m):
            enc, cp = open_pass()
            t0 = pc()
            cp.end()
            tot += pc() - t0
            keep.append(enc.finish())
        return tot, keep

    def finish(m: int) -> tuple[int, list[Any]]:
        keep, tot = [], 0
        for _ in range(m):
            enc, cp = open_pass()
            cp.end()
            t0 = pc()
            cb = enc.finish()
            tot += pc() - t0
            keep.append(cb)
        return tot, keep

    def submit(m: int) -> tuple[int, list[Any]]:
        cbs = [cb_one(i) for i in range(m)]
        tot, sub = 0, queue.submit
        for cb in cbs:
            t0 = pc()
            sub([cb])
            tot += pc() - t0
        wait()
        b.expected += m
        return tot, []

    def wait_one(m: int) -> tuple[int, list[Any]]:
        tot = 0
        for i in range(m):
            queue.submit([cb_one(i)])
            t0 = pc()
            wait()
            tot += pc() - t0
        b.expected += m
        return tot, []

    def write_buffer(m: int) -> tuple[int, list[Any]]:
        tot, wb = 0, queue.write_buffer
        for _ in range(m):
            t0 = pc()
            wb(scratch, 0, payload)
            tot += pc() - t0
        return tot, []

    def create_bind_group(m: int) -> tuple[int, list[Any]]:
        keep, tot, f = [], 0, dev.create_bind_group
        for _ in range(m):
            t0 = pc()
            bg = f(layout=layout, entries=entries)
            tot += pc() - t0
            keep.append(bg)
        return tot, keep

    def readback(m: int) -> tuple[int, list[Any]]:
        tot = 0
        for i in range(m):
            d = pool[i % len(pool)]
            t0 = pc()
            enc = dev.create_command_encoder()
            cp = enc.begin_compute_pass()
            cp.set_pipeline(d.pipeline)
            cp.set_bind_group(0, d.bind_group)
            cp.dispatch_workgroups(1, 1, 1)
            cp.end()
            enc.copy_buffer_to_buffer(b.counter, 0, mapbuf, 0, 4)
            queue.submit([enc.finish()])
            mapbuf.map_sync(read_mode, 0, 4)
            mapbuf.read_mapped(0, 4)
            mapbuf.unmap()
            tot += pc() - t0
        b.expected += m
        return tot, []

    def read_buffer(m: int) -> tuple[int, list[Any]]:
        tot, rb = 0, queue.read_buffer
        for _ in range(m):
            t0 = pc()
            rb(scratch, 0, 4)
            tot += pc() - t0
        return tot, []

    # Raw handles for the native rows, fetched outside the brackets.
    raw_pipes = [p._internal for p in pipes]
    raw_bgs = [x._internal for x in bgs]

    return {
        "create_encoder": create_encoder,
        "begin_pass": begin_pass,
        "set_pipeline": in_pass(lambda cp, i: cp.set_pipeline(pipes[i & 1])),
        "set_bind_group": in_pass(lambda cp, i: cp.set_bind_group(0, bgs[2 * (i % (len(bgs) // 2))]),
                                  lambda cp: cp.set_pipeline(pipes[0])),
        "dispatch": in_pass(lambda cp, i: cp.dispatch_workgroups(1, 1, 1), bound),
        "end_pass": end_pass,
        "finish": finish,
        "submit": submit,
        "wait": wait_one,
        "set_pipeline_native": in_pass(lambda cp, i: n_set_pipe(cp._internal, raw_pipes[i & 1])),
        "set_bind_group_native": in_pass(
            lambda cp, i: n_set_bg(cp._internal, 0, raw_bgs[2 * (i % (len(raw_bgs) // 2))], 0, null),
            lambda cp: cp.set_pipeline(pipes[0])),
        "dispatch_native": in_pass(lambda cp, i: n_disp(cp._internal, 1, 1, 1), bound),
        "write_buffer": write_buffer,
        "create_bind_group": create_bind_group,
        "readback_round_trip": readback,
        "read_buffer": read_buffer,
    }


def _lambda_overhead_ns(reps: int = 2001) -> float:
    """What a bracketed `call(cp, i)` of a lambda adds over an empty bracket."""
    pc = time.perf_counter_ns
    noop: Callable[[Any, int], None] = lambda cp, i: None  # noqa: E731
    d = []
    for i in range(reps):
        t0 = pc()
        noop(None, i)
        d.append(pc() - t0)
    return max(0.0, median(d) - timer_overhead_ns())


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
    slow = {"readback_round_trip", "read_buffer", "wait"}
    samples: dict[str, list[float]] = {k: [] for k, _ in CALLS}
    b.reset_counters()
    b.progress(f"{b.gpu.backend}: per-call breakdown ({len(CALLS)} calls, "
               f"{cfg.warmup} warm-up + {cfg.reps} rounds)")
    with no_gc():
        for r in range(cfg.warmup + cfg.reps):
            for name, _ in CALLS:
                m = cfg.readback_block if name in slow else cfg.call_block
                tot, keep = timers[name](m)
                del keep  # released outside the brackets
                if r >= cfg.warmup:
                    samples[name].append(max(0.0, (tot - m * overhead) / m) * 1e-9)
    verified = b.check_counters("breakdown")
    out: dict[str, Any] = {}
    for name, what in CALLS:
        out[name] = {"us": summarize(samples[name], 1e6), "what": what,
                     "api": "native" if name.endswith("_native") else "wrapper"}
    return {"calls": out, "timer_overhead_ns": overhead, "verified": verified}
