"""The eager command stream: kernel launches batched into one compute pass per submit.

A submit costs 30-60 µs and a read-back round trip far more, while a dispatch inside an open
pass costs a few µs. So launches only queue (pipeline, bind group, grid) triples; the batch is
submitted when the CPU needs data back, before a queue write into a buffer the batch still
uses, or when it grows large. WebGPU orders dispatches in a pass, so no barriers are needed.

Each launch passes its shapes, strides and scalars in a small parameter block. Blocks are
appended to a host-side arena that is written to the GPU with one queue write per submit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..runtime.native import PassEncoder
from .memory import Block, Pool
from .native_calls import BindGroup, NativeCalls

MAX_PENDING = 2048  # launches per submit in eager mode
CHUNK = 1 << 16  # bytes per parameter arena chunk


@dataclass(frozen=True)
class GpuKernel:
    name: str
    pipeline: Any
    layout: Any  # native bind group layout handle
    n_bindings: int  # storage bindings, without the parameter block


class ParamArena:
    """Parameter blocks of many launches, packed into a few GPU buffers."""

    def __init__(self, gpu: Any, align: int) -> None:
        self.gpu = gpu
        self.align = align
        self.chunks: list[tuple[Any, bytearray]] = []  # (buffer, host copy)
        self.cur = 0  # chunk in use
        self.dirty: set[int] = set()

    def put(self, data: bytes) -> tuple[Any, int, int]:
        n = len(data)
        if not self.chunks:
            self._grow()
        buf, host = self.chunks[self.cur]
        off = -(-len(host) // self.align) * self.align
        if off + n > CHUNK:
            self.cur += 1
            if self.cur == len(self.chunks):
                self._grow()
            buf, host = self.chunks[self.cur]
            off = 0
        host.extend(b"\0" * (off - len(host)))
        host.extend(data)
        self.dirty.add(self.cur)
        return buf._internal, off, n

    def _grow(self) -> None:
        self.chunks.append((self.gpu.buffer(CHUNK, "params"), bytearray()))

    def upload(self, native: NativeCalls) -> None:
        for i in sorted(self.dirty):
            buf, host = self.chunks[i]
            pad = (-len(host)) % 4
            native.write(buf._internal, 0, bytes(host) + b"\0" * pad if pad else host)
        self.dirty.clear()

    def reset(self) -> None:
        for _, host in self.chunks:
            host.clear()
        self.cur = 0

    @property
    def pending(self) -> int:
        return self.cur


@dataclass
class Recording:
    """What a graph's launches left behind: replayable dispatches and what they pin."""

    arena: ParamArena
    dispatches: list[tuple[str, GpuKernel, BindGroup, tuple[int, int, int]]] = field(default_factory=list)


class Stream:
    def __init__(self, gpu: Any, pool: Pool) -> None:
        self.gpu = gpu
        self.pool = pool
        self.native = NativeCalls(gpu)
        self.align = int(gpu.limits.get("min-storage-buffer-offset-alignment", 256))
        self._encoder = PassEncoder(gpu.backend)
        self.arena = ParamArena(gpu, self.align)
        self.items: list[tuple[Any, Any, int, int, int]] = []
        self.keep: list[Any] = []  # bind groups alive until the submit
        self.batch = 0  # id of the batch being filled; blocks record the last batch using them
        self.recording: Recording | None = None
        self.launches = 0
        self.submits = 0
        self._kernels: dict[Any, GpuKernel] = {}
        self._layouts: list[Any] = []
        self._sentinel: Any = None

    # -- kernels -------------------------------------------------------------------------
    def kernel(self, key: Any, make: Callable[[], tuple[str, str, int]]) -> GpuKernel:
        """The compiled kernel for `key`; `make()` returns (name, wgsl, storage bindings)."""
        k = self._kernels.get(key)
        if k is None:
            name, wgsl, n = make()
            pipe = self.gpu.pipeline(wgsl, name)
            layout = pipe.get_bind_group_layout(0)
            self._layouts.append(layout)  # keep the wrapper (and so its handle) alive
            k = GpuKernel(name, pipe, layout._internal, n)
            self._kernels[key] = k
        return k

    def launch(self, kernel: GpuKernel, bindings: list[tuple[Block, int, int]], params: bytes,
               grid: tuple[int, int, int]) -> None:
        """Queue one dispatch. `bindings`: (block, byte offset, byte size) per storage binding."""
        if len(bindings) != kernel.n_bindings:
            raise RuntimeError(f"{kernel.name}: {len(bindings)} buffers for {kernel.n_bindings} bindings")
        rec = self.recording
        arena = rec.arena if rec is not None else self.arena
        entries = []
        batch = self.batch
        for blk, off, size in bindings:
            blk.epoch = batch
            entries.append((blk.handle, off, size))
        entries.append(arena.put(params))
        bg = self.native.bind_group(kernel.layout, entries)
        x, y, z = grid
        self.items.append((kernel.pipeline._internal, bg._internal, x, y, z))
        self.keep.append(bg)
        self.launches += 1
        if rec is not None:
            rec.dispatches.append((kernel.name, kernel, bg, grid))
        elif len(self.items) >= MAX_PENDING or self.arena.pending > 64:
            self.flush()

    # -- submission ----------------------------------------------------------------------
    def flush(self, after: Callable[[Any], None] | None = None) -> None:
        """Submit the pending launches (and `after(encoder)`'s copies) as one command buffer."""
        if not self.items and after is None:
            return
        if self.recording is not None:
            self.recording.arena.upload(self.native)
        self.arena.upload(self.native)
        enc = self.gpu.device.create_command_encoder()
        if self.items:
            cpass = enc.begin_compute_pass()
            self._encoder.encode(cpass, self.items)
            cpass.end()
        if after is not None:
            after(enc)
        self.gpu.submit([enc.finish()])
        self.submits += 1
        self.items = []
        self.keep = []
        self.arena.reset()
        self.batch += 1

    def write(self, block: Block, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Queue-write bytes into a block, after every launch queued so far that uses it."""
        if block.epoch == self.batch and self.items:
            self.flush()
        n = len(data)
        if offset % 4 or n % 4:  # queue writes need whole words: merge with the bytes around
            lo, hi = offset - offset % 4, -(-(offset + n) // 4) * 4
            cur = bytearray(self.read(block, lo, hi - lo))
            cur[offset - lo:offset - lo + n] = data
            offset, data = lo, cur
        self.native.write(block.handle, offset, data)

    def read(self, block: Block, offset: int, nbytes: int) -> bytes:
        """Synchronous read-back of bytes [offset, offset + nbytes) after all queued work."""
        self.flush()
        lo, hi = offset - offset % 4, -(-(offset + nbytes) // 4) * 4
        raw = self.gpu.queue.read_buffer(block.buf, lo, hi - lo)
        return bytes(memoryview(raw)[offset - lo:offset - lo + nbytes])

    def wait(self) -> None:
        """Submit everything and block until the GPU has done it (a read-back waits for all)."""
        self.flush()
        if self._sentinel is None:
            self._sentinel = self.gpu.buffer(16, "sentinel")
        self.gpu.queue.read_buffer(self._sentinel, 0, 4)

    def copy(self, src: Block, src_off: int, dst: Block, dst_off: int, nbytes: int) -> None:
        """Buffer-to-buffer copy (offsets and size whole words), ordered after pending launches."""
        src.epoch = dst.epoch = self.batch
        self.flush(after=lambda enc: enc.copy_buffer_to_buffer(src.buf, src_off, dst.buf, dst_off, nbytes))
