"""Program: an ordered list of kernel dispatches over GPU buffers, bound once, replayed cheaply.

Pipelines and bind groups are created when a dispatch is added; replaying the Program is one
command encoder, one compute pass and one submit, with the per-dispatch work reduced to three
native calls. Grids are fixed tuples or functions of `n` (the number of tokens of a prefill),
so one Program serves every prompt length up to its buffers' capacity.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .gpu import Gpu
from .native import PassEncoder, handle

Grid = tuple[int, int, int] | Callable[[int], tuple[int, int, int]]


@dataclass(frozen=True)
class Kernel:
    """A specialised WGSL compute shader (entry point `main`, bind group 0)."""

    name: str
    wgsl: str
    bindings: tuple[str, ...] = ()


@dataclass
class Dispatch:
    label: str
    pipeline: Any
    bind_group: Any
    grid: Grid
    # what `Program.add` was given, kept for the plan export (engine/export.py): the kernel and
    # its buffers in binding order (a buffer, or (buffer, offset, size)); None for `add_bound`
    kernel: Kernel | None = None
    buffers: tuple[Any, ...] = ()

    def size(self, n: int) -> tuple[int, int, int]:
        g = self.grid(n) if callable(self.grid) else self.grid
        return (int(g[0]), int(g[1]), int(g[2]))


class Program:
    def __init__(self, gpu: Gpu, label: str = "program") -> None:
        self.gpu = gpu
        self.label = label
        self.dispatches: list[Dispatch] = []
        self._encoder = PassEncoder(gpu.backend)
        self._items: dict[int, list[tuple[Any, Any, int, int, int]]] = {}

    def add(self, kernel: Kernel, bindings: dict[str, Any] | Sequence[Any], grid: Grid,
            label: str = "") -> None:
        """Bind `kernel` to buffers (by binding name, or in order) and append its dispatch."""
        if isinstance(bindings, dict):
            missing = set(kernel.bindings) - set(bindings)
            if missing:
                raise ValueError(f"{kernel.name}: no buffer for binding(s) {sorted(missing)}")
            bindings = [bindings[n] for n in kernel.bindings]
        pipe = self.gpu.pipeline(kernel.wgsl, kernel.name)
        bg = self.gpu.bind_group(pipe, list(bindings), label or kernel.name)
        self.dispatches.append(Dispatch(label or kernel.name, pipe, bg, grid, kernel, tuple(bindings)))
        self._items.clear()

    def add_bound(self, label: str, pipeline: Any, bind_group: Any, grid: Grid) -> None:
        """Append a dispatch whose pipeline and bind group already exist (e.g. recorded)."""
        self.dispatches.append(Dispatch(label, pipeline, bind_group, grid))
        self._items.clear()

    def invalidate(self) -> None:
        """Forget the encoded dispatch lists (after a dispatch's bind group was replaced)."""
        self._items.clear()

    def extend(self, other: Program) -> None:
        self.dispatches.extend(other.dispatches)
        self._items.clear()

    def __len__(self) -> int:
        return len(self.dispatches)

    def _items_for(self, n: int) -> list[tuple[Any, Any, int, int, int]]:
        items = self._items.get(n)
        if items is None:
            items = []
            for d in self.dispatches:
                x, y, z = d.size(n)
                if x and y and z:  # an empty grid (e.g. no rows left) is skipped
                    items.append((handle(d.pipeline), handle(d.bind_group), x, y, z))
            if len(self._items) > 64:
                self._items.clear()
            self._items[n] = items
        return items

    # -- replay --------------------------------------------------------------------------
    def encode(self, cpass: Any, n: int = 1, lo: int = 0, hi: int | None = None) -> None:
        """Encode dispatches [lo, hi) (all by default) into an open compute pass."""
        items = self._items_for(n)
        self._encoder.encode(cpass, items if lo == 0 and hi is None else items[lo:hi])

    def run(self, n: int = 1, before: Callable[[Any], None] | None = None,
            after: Callable[[Any], None] | None = None) -> None:
        """One encoder, one pass, one submit. `before`/`after` may add copies around the pass."""
        enc = self.gpu.device.create_command_encoder()
        if before:
            before(enc)
        cpass = enc.begin_compute_pass()
        self.encode(cpass, n)
        cpass.end()
        if after:
            after(enc)
        self.gpu.submit([enc.finish()])

    def run_per_dispatch(self, n: int = 1) -> None:
        """The 'sequential' pattern of the literature: each dispatch its own encoder and submit."""
        dev, enc_fn = self.gpu.device, self._encoder.encode
        for item in self._items_for(n):
            enc = dev.create_command_encoder()
            cpass = enc.begin_compute_pass()
            enc_fn(cpass, [item])
            cpass.end()
            self.gpu.submit([enc.finish()])

    # -- profiling -----------------------------------------------------------------------
    def profile(self, n: int = 1) -> list[tuple[str, float]]:
        """GPU time of each dispatch in seconds, one timestamped pass per dispatch.

        Needs the `timestamp-query` feature. Splitting into passes adds a little time per
        dispatch, so the sum is an upper bound of the replayed Program's GPU time.
        """
        gpu = self.gpu
        if not gpu.has_timestamps:
            raise RuntimeError("profiling needs the timestamp-query feature")
        disp = [d for d in self.dispatches if all(d.size(n))]
        count = 2 * len(disp)
        qs = gpu.device.create_query_set(type="timestamp", count=count)
        resolve = gpu.buffer(8 * count, "timestamps", gpu.usage.QUERY_RESOLVE | gpu.usage.COPY_SRC)
        enc = gpu.device.create_command_encoder()
        for i, d in enumerate(disp):
            cpass = enc.begin_compute_pass(timestamp_writes={
                "query_set": qs,
                "beginning_of_pass_write_index": 2 * i,
                "end_of_pass_write_index": 2 * i + 1,
            })
            x, y, z = d.size(n)
            self._encoder.encode(cpass, [(handle(d.pipeline), handle(d.bind_group), x, y, z)])
            cpass.end()
        enc.resolve_query_set(qs, 0, count, resolve, 0)
        gpu.submit([enc.finish()])
        ts = np.frombuffer(gpu.read(resolve), dtype=np.uint64).astype(np.float64)
        # WebGPU timestamps are nanoseconds.
        return [(d.label, (ts[2 * i + 1] - ts[2 * i]) * 1e-9) for i, d in enumerate(disp)]

    def profile_by_label(self, n: int = 1) -> list[dict[str, Any]]:
        """`profile` summed per dispatch label: {"kernel", "us", "count", "workgroups"} (the
        most workgroups one of its dispatches has: against the GPU's multiprocessors, how full
        its waves are), longest first."""
        per: dict[str, list[float]] = {}
        groups = {d.label: 0 for d in self.dispatches}
        for d in self.dispatches:
            x, y, z = d.size(n)
            groups[d.label] = max(groups[d.label], x * y * z)
        for label, sec in self.profile(n):
            acc = per.setdefault(label, [0.0, 0])
            acc[0] += sec
            acc[1] += 1
        return sorted(({"kernel": k, "us": v[0] * 1e6, "count": int(v[1]), "workgroups": groups[k]} for k, v in per.items()),
                      key=lambda r: -r["us"])

    def time_gpu(self, n: int = 1, reps: int = 10) -> float:
        """GPU seconds of one replay (median), from timestamps around a single pass."""
        gpu = self.gpu
        if not gpu.has_timestamps:
            raise RuntimeError("GPU timing needs the timestamp-query feature")
        qs = gpu.device.create_query_set(type="timestamp", count=2 * reps)
        resolve = gpu.buffer(16 * reps, "timestamps", gpu.usage.QUERY_RESOLVE | gpu.usage.COPY_SRC)
        for r in range(reps):
            enc = gpu.device.create_command_encoder()
            cpass = enc.begin_compute_pass(timestamp_writes={
                "query_set": qs, "beginning_of_pass_write_index": 2 * r, "end_of_pass_write_index": 2 * r + 1})
            self.encode(cpass, n)
            cpass.end()
            if r == reps - 1:
                enc.resolve_query_set(qs, 0, 2 * reps, resolve, 0)
            gpu.submit([enc.finish()])
        ts = np.frombuffer(gpu.read(resolve), dtype=np.uint64).astype(np.float64).reshape(reps, 2)
        return float(np.median(ts[:, 1] - ts[:, 0]) * 1e-9)

    def time_encode(self, n: int = 1, reps: int = 20) -> float:
        """CPU seconds to encode this Program into a pass (median), without submitting."""
        dev = self.gpu.device
        samples = []
        for _ in range(reps):
            enc = dev.create_command_encoder()
            cpass = enc.begin_compute_pass()
            t0 = time.perf_counter()
            self.encode(cpass, n)
            samples.append(time.perf_counter() - t0)
            cpass.end()
            enc.finish()  # dropped unsubmitted
        return float(np.median(samples))


def run_programs(gpu: Gpu, programs: Sequence[tuple[Program, int]],
                 after: Callable[[Any], None] | None = None) -> int | None:
    """Several Programs (each with its token count) in one encoder, one pass, one submit;
    `Gpu.submit`'s index (for a `ReadBack` of what `after` copied)."""
    enc = gpu.device.create_command_encoder()
    cpass = enc.begin_compute_pass()
    for prog, n in programs:
        prog.encode(cpass, n)
    cpass.end()
    if after:
        after(enc)
    return gpu.submit([enc.finish()])


def concat(gpu: Gpu, label: str, *programs: Program) -> Program:
    """One Program replaying the dispatches of several (bind groups are shared, not copied)."""
    out = Program(gpu, label)
    for p in programs:
        out.extend(p)
    return out


def run_each_once(gpu: Gpu, programs: Sequence[Program], n: Any = 1,
                  progress: Callable[[int, int], None] | None = None) -> None:
    """Run each pipeline of `programs` not yet run on this device once, in a dispatch of its
    own at size `n` (a submit and a wait each), so that drivers that compile at first use
    (llvmpipe, some GPU drivers) do it now rather than inside a first prompt or request;
    `progress(done, total)` after each. What the dispatches write must be written again
    before it is read (the callers' tables say one row at position 0)."""
    todo = []
    for p in programs:
        for d in p.dispatches:
            size = d.size(n)
            if id(d.pipeline) not in gpu.ran and all(size):
                gpu.ran.add(id(d.pipeline))
                todo.append((p, (handle(d.pipeline), handle(d.bind_group), *size)))
    for k, (p, item) in enumerate(todo):
        enc = gpu.device.create_command_encoder()
        cpass = enc.begin_compute_pass()
        p._encoder.encode(cpass, [item])
        cpass.end()
        gpu.submit([enc.finish()])
        gpu.sync()
        if progress:
            progress(k + 1, len(todo))
