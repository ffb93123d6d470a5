"""What every micro-benchmark of one backend shares: the device, a wait, the trivial dispatches.

The trivial dispatches alternate between two pipelines and cycle through distinct bind groups
(each on its own counter slot), so every dispatch sets a pipeline and a bind group, as in a
real decode step, and the counters prove afterwards that each dispatch ran.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..runtime.gpu import Gpu
from ..runtime.native import device_poll
from ..runtime.program import Program
from .config import Config
from .kernels import trivial

SLOT_BYTES = 256  # the minimum storage-binding offset alignment of every adapter
SLOTS = 16  # distinct bind groups per pipeline


class Progress:
    """One line per step on stderr, with the time since the run began."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"[characterize {time.perf_counter() - self.t0:6.1f}s] {msg}", file=sys.stderr,
                  flush=True)


def prepare_backend(backend: str) -> list[str]:
    """Per-backend setup before the device opens; returns notes for the record.

    Dawn quantizes timestamp queries by default (a browser defence against timing attacks),
    which makes small kernels' GPU times read as 0 or 16 µs; a native benchmark turns that off.
    It can only be set before Dawn's instance exists (the first adapter request).
    """
    if backend != "dawn":
        return []
    try:
        from wgpudawn.backends.dawn import extras

        extras.set_instance_extras(disable_toggles=["timestamp_quantization"])
    except Exception as e:  # e.g. the instance already exists in this process
        return [f"Dawn timestamp quantization left on ({type(e).__name__}: {e}); small GPU times are coarse"]
    return ["Dawn toggle timestamp_quantization disabled"]


def make_waiter(gpu: Gpu) -> tuple[Callable[[], None], str]:
    """A blocking wait for all submitted work, and its name for the record.

    wgpu 0.32's `on_submitted_work_done_sync` fails inside cffi on wgpu-native, so there the
    wait is the native `wgpuDevicePoll(wait=true)`, which is what that call would do anyway.
    """
    if gpu.backend == "wgpu":
        return device_poll(gpu.device), "wgpuDevicePoll(wait=true)"
    return gpu.queue.on_submitted_work_done_sync, "queue.on_submitted_work_done_sync()"


@contextmanager
def no_gc() -> Iterator[None]:
    """Keep the garbage collector out of timed loops (it would add ms-long outliers)."""
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@dataclass
class Bench:
    gpu: Gpu
    cfg: Config
    progress: Progress
    wait: Callable[[], None] = field(init=False)
    wait_method: str = field(init=False)
    counter: Any = field(init=False)
    program: Program = field(init=False)  # cfg.dispatches trivial dispatches, bound once
    expected: int = 0  # dispatches issued since the counters were last zeroed

    def __post_init__(self) -> None:
        self.wait, self.wait_method = make_waiter(self.gpu)
        g = self.gpu
        self.counter = g.buffer(SLOTS * SLOT_BYTES, "counters")
        kernels = (trivial("A"), trivial("B"))
        # Bind each (kernel, slot) once; the Program repeats them to cfg.dispatches entries.
        pool = Program(g, "trivial-pool")
        for s in range(SLOTS):
            for k in kernels:
                pool.add(k, [(self.counter, s * SLOT_BYTES, 4)], (1, 1, 1))
        self.program = Program(g, "trivial")
        for i in range(self.cfg.dispatches):
            self.program.dispatches.append(pool.dispatches[i % len(pool.dispatches)])
        self.pool = pool.dispatches

    @property
    def dispatches(self) -> list[Any]:
        return self.program.dispatches

    # -- correctness of the counters -----------------------------------------------------
    def reset_counters(self) -> None:
        self.wait()
        self.gpu.write(self.counter, np.zeros(SLOTS * SLOT_BYTES // 4, np.uint32))
        self.expected = 0

    def counted(self) -> int:
        self.wait()
        words = self.gpu.read_array(self.counter, np.uint32, SLOTS * SLOT_BYTES // 4)
        return int(words[:: SLOT_BYTES // 4].sum())

    def check_counters(self, what: str) -> bool:
        got = self.counted()
        if got != self.expected:
            self.progress(f"warning: {what}: {got} dispatches counted, {self.expected} issued")
            return False
        return True
