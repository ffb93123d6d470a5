"""GPU memory for tensor storages: a caching pool of buffers, and capture for recordings.

A torch storage on the webgpu device carries an `Allocation` (attribute `_wg` of its Python
storage object, which torch keeps alive exactly as long as the storage). When the storage
dies, its block goes back to the pool. Creating a WebGPU buffer costs ~25 µs and eager mode
allocates a few tensors per op, so blocks are reused by size class.

Within a class, a request takes the free block created first (lowest serial), not the one
freed last: the blocks a decode step gets then depend only on which are free, so step after
step the same ops get the same blocks and the stream's cached bind groups hit. Freed last
first, the tensors that live from one token into the next (the KV caches growing a row a
token, the ids, the sampled token) rotated every class's blocks through new combinations,
and a bind group was created for ~1 launch in 4.

While a graph is being recorded (compiled mode), every block it allocates belongs to that
recording: its bind groups keep pointing at them, so they must never be handed to anyone
else while the recording lives.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

from ..runtime.native import handle

_MIN = 256


def size_class(nbytes: int) -> int:
    """Power-of-two classes up to 1 MiB, then steps of 1/8 of the power of two."""
    n = max(_MIN, nbytes)
    if n <= 1 << 20:
        return 1 << (n - 1).bit_length()
    step = (1 << (n - 1).bit_length()) // 8
    return -(-n // step) * step


_serials = itertools.count()


class Block:
    """One WebGPU buffer and what the stream needs to know about it."""

    __slots__ = ("buf", "epoch", "handle", "in_use", "owner", "serial", "size")

    def __init__(self, buf: Any, size: int) -> None:
        self.buf = buf
        self.handle = handle(buf)  # the native handle, for bind groups and queue writes
        # Caches key on this, not on the native handle: a freed buffer's address can come back.
        self.serial = next(_serials)
        self.size = size
        self.epoch = -1  # stream batch that last bound it (see Stream)
        self.owner: Capture | None = None
        self.in_use = False  # held by a live Allocation


class Allocation:
    """The lease a storage holds on a block; returns the block when the storage dies."""

    __slots__ = ("block", "nbytes", "pool")

    def __init__(self, block: Block, nbytes: int, pool: Pool) -> None:
        self.block = block
        self.nbytes = nbytes
        self.pool = pool

    def __del__(self) -> None:
        try:
            self.pool.free(self.block)
        except Exception:  # interpreter shutdown
            pass


class Capture:
    """Blocks owned by one recording: reused within it while recording, pinned afterwards."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self.free: dict[int, list[Block]] = {}
        self.recording = True

    def take(self, cls: int) -> Block | None:
        lst = self.free.get(cls)
        return lst.pop() if lst else None

    def adopt(self, block: Block) -> None:
        block.owner = self
        self.blocks.append(block)

    def on_free(self, block: Block) -> None:
        if self.recording:
            self.free.setdefault(block.size, []).append(block)

    def release(self, pool: Pool) -> None:
        """Give the blocks back to the pool (the recording is gone); blocks still held by a
        tensor go back when that tensor dies."""
        self.recording = False
        for b in self.blocks:
            b.owner = None
            if not b.in_use:
                pool.put(b)
        self.blocks.clear()
        self.free.clear()


class Pool:
    def __init__(self, gpu: Any) -> None:
        self.gpu = gpu
        self.free_lists: dict[int, list[tuple[int, Block]]] = {}  # per size class, a heap by serial
        self.capture: Capture | None = None
        self.allocated = 0  # bytes of WebGPU buffers created
        self.cached = 0  # bytes of them sitting in the free lists
        self.big = 0  # blocks over the binding limit (planned ops check their inputs while any exist)

    def alloc(self, nbytes: int) -> Allocation:
        return self.alloc_class(size_class(nbytes), nbytes)

    def alloc_class(self, cls: int, nbytes: int) -> Allocation:
        """`alloc` with the size class already worked out (`size_class(nbytes)`)."""
        cap = self.capture
        block = cap.take(cls) if cap is not None else None
        if block is None:
            heap = self.free_lists.get(cls)
            if heap:
                block = heapq.heappop(heap)[1]
                self.cached -= cls
            else:
                block = Block(self.gpu.buffer(cls, "tensor"), cls)
                self.allocated += cls
                self.big += cls > self.gpu.max_binding
            if cap is not None:
                cap.adopt(block)
        block.in_use = True
        return Allocation(block, nbytes, self)

    def free(self, block: Block) -> None:
        block.in_use = False
        if block.owner is not None:
            block.owner.on_free(block)
        else:
            self.put(block)

    def put(self, block: Block) -> None:
        heapq.heappush(self.free_lists.setdefault(block.size, []), (block.serial, block))
        self.cached += block.size

    def empty_cache(self) -> None:
        for heap in self.free_lists.values():
            for _, b in heap:
                b.buf.destroy()
                self.allocated -= b.size
                self.big -= b.size > self.gpu.max_binding
        self.free_lists.clear()
        self.cached = 0
