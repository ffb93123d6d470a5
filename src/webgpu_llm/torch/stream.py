"""The eager command stream: kernel launches batched into one compute pass per submit.

A submit costs 30-60 µs and a read-back round trip far more, while a dispatch inside an open
pass costs a few µs. So launches only queue (pipeline, bind group, grid) triples; the batch is
submitted when the CPU needs data back, before a queue write into a buffer the batch still
uses, or every MAX_PENDING launches (so the GPU works while the CPU queues). WebGPU orders
dispatches in a pass, so no barriers are needed.

Each launch passes its shapes, strides and scalars in a small parameter block. Creating a bind
group costs 10-60 µs, more than the rest of a launch, so in eager mode parameter blocks are
interned (each distinct block is written to the GPU once) and bind groups are cached by
(kernel, buffers, parameter block): a decode step that repeats the previous one's shapes and
gets the same buffers back from the pool creates no bind group at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..runtime.native import Handle, Item, NativeBindGroup, NativeCalls, PassEncoder, handle
from ..runtime.program import Program
from .memory import Block, Pool

# Launches per submit in eager mode: small enough that the GPU starts on a token's first
# launches while the CPU still queues the rest, large enough that submits stay few (a decode
# token is ~1000 launches; 256 vs 2048: eager decode +10-15 % on an H200).
MAX_PENDING = 256
# Dispatches of a compiled graph's replay per submit: the GPU starts on the first part while
# the CPU still encodes and submits the rest (Dawn records the Vulkan commands at submit,
# ~2 µs a dispatch): compiled decode +15-25 % against one submit on an H200.
REPLAY_CHUNK = 32
CHUNK = 1 << 16  # bytes per parameter arena chunk
MAX_INTERNED = 64  # chunks of interned parameter blocks before the caches start over
MAX_BIND_GROUPS = 1 << 15
MAX_LAUNCH_BIND_GROUPS = 256  # per planned launch (one op of one shape may run at every layer)
READ_STAGING = 1 << 16  # bytes of the reusable read-back buffer


@dataclass(frozen=True)
class GpuKernel:
    name: str
    pipeline: Any
    layout: Handle  # native bind group layout handle
    n_bindings: int  # storage bindings, without the parameter block
    # the pipeline's native handle, taken once here for the launches
    pipeline_handle: Handle = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pipeline_handle", handle(self.pipeline))


class FastLaunch:
    """One launch of a launch plan (ops/plans.py), with what `Stream.launch_planned` caches."""

    __slots__ = ("bg_gen", "bgs", "gen", "grid", "idx", "kernel", "params", "slot")

    def __init__(self, kernel: GpuKernel, idx: tuple[int, ...], params: bytes, grid: tuple[int, int, int]) -> None:
        self.kernel = kernel
        self.idx = idx  # the blocks to bind, as indices into the plan's inputs + allocations
        self.params = params
        self.grid = grid
        self.slot: Any = None  # the interned parameter block, valid while `gen` is the stream's
        self.gen = -1
        # this launch's bind groups by the blocks they bind (a decode step gets the same blocks
        # back token after token), valid while `bg_gen` is the stream's
        self.bgs: dict[tuple[Block, ...], NativeBindGroup] = {}
        self.bg_gen = -1


class ParamArena:
    """Parameter blocks packed into GPU buffers, appended to and written at each submit."""

    def __init__(self, gpu: Any, align: int) -> None:
        self.gpu = gpu
        self.align = align
        # (buffer, host copy, capacity in bytes, the buffer's native handle)
        self.chunks: list[tuple[Any, bytearray, int, Handle]] = []
        self.written: list[int] = []  # bytes of each chunk already on the GPU

    def put(self, data: bytes) -> tuple[Handle, int, int]:
        """Append a parameter block; its binding entry: (native buffer handle, offset, size)."""
        n = len(data)
        if not self.chunks or -(-len(self.chunks[-1][1]) // self.align) * self.align + n > self.chunks[-1][2]:
            size = max(CHUNK, n)
            buf = self.gpu.buffer(size, "params")
            self.chunks.append((buf, bytearray(), size, handle(buf)))
            self.written.append(0)
        _, host, _, raw = self.chunks[-1]
        off = -(-len(host) // self.align) * self.align
        host.extend(bytes(off - len(host)))
        host.extend(data)
        return raw, off, n

    def upload(self, native: NativeCalls) -> None:
        for i, (_, host, _, raw) in enumerate(self.chunks):
            start = self.written[i] - self.written[i] % 4
            if start < len(host):
                end = -(-len(host) // 4) * 4
                host.extend(bytes(end - len(host)))
                native.write(raw, start, memoryview(host)[start:end])
                self.written[i] = end

    def clear(self) -> None:
        for _, host, _, _ in self.chunks:
            host.clear()
        self.chunks = self.chunks[:1]
        self.written = [0] * len(self.chunks)


@dataclass
class Recording:
    """What a graph's launches left behind: replayable dispatches and what they pin."""

    arena: ParamArena
    dispatches: list[tuple[str, GpuKernel, NativeBindGroup, tuple[int, int, int]]] = field(default_factory=list)
    # per dispatch: the blocks bound and the parameter block's entry (to bind them again)
    bindings: list[tuple[list[Block], tuple[Handle, int, int]]] = field(default_factory=list)
    # False once the graph moved data through the host (a read-back, a queue write, a CPU
    # fallback): replaying only the launches would not reproduce that.
    replayable: bool = True

    def program(self, gpu: Any, name: str) -> Program:
        """The recorded dispatches as a `Program` (bound once; replayed or timed as a whole)."""
        program = Program(gpu, name)
        for label, kernel, bg, grid in self.dispatches:
            program.add_bound(label, kernel.pipeline, bg, grid)
        return program


class Stream:
    def __init__(self, gpu: Any, pool: Pool) -> None:
        self.gpu = gpu
        self.pool = pool
        self.native = NativeCalls(gpu)
        self.align = int(gpu.limits.get("min-storage-buffer-offset-alignment", 256))
        self._encoder = PassEncoder(gpu.backend)
        self.params = ParamArena(gpu, self.align)  # interned parameter blocks
        self._interned: dict[bytes, tuple[Handle, int, int]] = {}
        self._intern_gen = 0  # bumped whenever the interned parameter blocks start over
        self._bind_groups: dict[Any, NativeBindGroup] = {}
        self._bg_gen = 0  # bumped whenever the bind-group cache starts over
        self.items: list[Item] = []
        self.keep: list[Any] = []  # bind groups alive until the submit
        self.batch = 0  # id of the batch being filled; blocks record the last batch using them
        self.recording: Recording | None = None
        self.launches = 0
        self.submits = 0
        self.bind_groups_made = 0  # (a cache miss each, in eager mode: bench/torch_generate.py reports them)
        self.max_pending = MAX_PENDING  # launches queued before a submit (see MAX_PENDING)
        self.replay_chunk = REPLAY_CHUNK  # a replay's dispatches per submit (see REPLAY_CHUNK)
        self._kernels: dict[Any, GpuKernel] = {}
        self._layouts: list[Any] = []
        self._staging: Any = None
        # told about every launch, and about data moving through the host (ops/plans.py)
        self.observers: list[Any] = []

    # -- kernels -------------------------------------------------------------------------
    def kernel(self, key: Any, make: Callable[[], tuple[str, str, int]]) -> GpuKernel:
        """The compiled kernel for `key`; `make()` returns (name, wgsl, storage bindings)."""
        k = self._kernels.get(key)
        if k is None:
            name, wgsl, n = make()
            pipe = self.gpu.pipeline(wgsl, name)
            layout = pipe.get_bind_group_layout(0)
            self._layouts.append(layout)  # keep the wrapper (and so its handle) alive
            k = GpuKernel(name, pipe, handle(layout), n)
            self._kernels[key] = k
        return k

    def launch(self, kernel: GpuKernel, blocks: list[Block], params: bytes, grid: tuple[int, int, int]) -> None:
        """Queue one dispatch binding the given blocks (whole) and a parameter block."""
        if len(blocks) != kernel.n_bindings:
            raise RuntimeError(f"{kernel.name}: {len(blocks)} buffers for {kernel.n_bindings} bindings")
        batch = self.batch
        for b in blocks:
            b.epoch = batch
        rec = self.recording
        if rec is not None:  # a recording owns its parameters and bind groups
            slot = rec.arena.put(params)
            bg = self.new_bind_group(kernel, blocks, slot)
            rec.dispatches.append((kernel.name, kernel, bg, grid))
            rec.bindings.append((list(blocks), slot))
        else:
            bg = self._cached_bind_group(kernel, blocks, self._param_slot(params))
        if self.observers:
            for obs in self.observers:
                obs.on_launch(kernel, blocks, params, grid)
        self.items.append((kernel.pipeline_handle, bg.handle, *grid))
        self.keep.append(bg)
        self.launches += 1
        if len(self.items) >= self.max_pending and rec is None:
            self.flush()

    def _param_slot(self, params: bytes) -> tuple[Handle, int, int]:
        """The interned parameter block with these bytes, written to the GPU once (may flush
        and start the caches over)."""
        slot = self._interned.get(params)
        if slot is not None:
            return slot
        if len(self.params.chunks) >= MAX_INTERNED:  # start over: nothing pending may use them
            self.flush()
            self.params.clear()
            self._interned.clear()
            self._bind_groups.clear()
            self._bg_gen += 1
            self._intern_gen += 1
        slot = self._interned[params] = self.params.put(params)
        return slot

    def new_bind_group(self, kernel: GpuKernel, blocks: Sequence[Block], slot: tuple[Handle, int, int]) -> NativeBindGroup:
        """A bind group of `blocks` (bound whole) and the parameter block `slot`."""
        self.bind_groups_made += 1
        return self.native.bind_group(kernel.layout, [*[(b.handle, 0, b.size) for b in blocks], slot])

    def _cached_bind_group(self, kernel: GpuKernel, blocks: Sequence[Block], slot: tuple[Handle, int, int]) -> NativeBindGroup:
        """Eager mode's bind group for (kernel, buffers, parameter block), made on first use."""
        key = (kernel.layout, slot, *[b.serial for b in blocks])
        bg = self._bind_groups.get(key)
        if bg is None:
            if len(self._bind_groups) >= MAX_BIND_GROUPS:
                self._drop_bind_groups()
            bg = self._bind_groups[key] = self.new_bind_group(kernel, blocks, slot)
        return bg

    def _drop_bind_groups(self) -> None:
        """Start the bind-group cache over; pending launches may still use the old ones."""
        self.keep.append(self._bind_groups)
        self._bind_groups = {}
        self._bg_gen += 1

    def launch_planned(self, launches: list[FastLaunch], blocks: list[Block]) -> None:
        """`launch` for each of a plan's launches, without recording or observers.

        The plan was built from checked launches. Each launch keeps its own bind groups by the
        blocks they bind (a lookup on the blocks alone; they are in the stream's cache too),
        and the parameter block's slot is looked up once per interning generation.
        """
        items = self.items
        batch = self.batch
        for f in launches:
            bl = tuple([blocks[i] for i in f.idx])
            if f.bg_gen != self._bg_gen:
                f.bgs, f.bg_gen = {}, self._bg_gen
            bg = f.bgs.get(bl)
            if bg is None:
                if f.gen != self._intern_gen:
                    slot = self._param_slot(f.params)  # may start the caches over: read the generations after
                    f.slot, f.gen = slot, self._intern_gen
                bg = self._cached_bind_group(f.kernel, bl, f.slot)  # held by the cache (or, dropped, by keep)
                if f.bg_gen != self._bg_gen or len(f.bgs) >= MAX_LAUNCH_BIND_GROUPS:
                    f.bgs, f.bg_gen = {}, self._bg_gen
                f.bgs[bl] = bg
                items, batch = self.items, self.batch  # a start-over flushed
            for b in bl:
                b.epoch = batch
            items.append((f.kernel.pipeline_handle, bg.handle, *f.grid))
            self.launches += 1
            if len(items) >= self.max_pending:
                self.flush()
                items = self.items
                batch = self.batch

    # -- submission ----------------------------------------------------------------------
    def flush(self, after: Callable[[Any], None] | None = None) -> None:
        """Submit the pending launches (and `after(encoder)`'s copies) as one command buffer."""
        if not self.items and after is None:
            return
        if self.recording is not None:
            self.recording.arena.upload(self.native)
        self.params.upload(self.native)
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
        self.batch += 1

    def write(self, block: Block, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Queue-write bytes into a block, after every launch queued so far that uses it."""
        self._host_transfer()
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
        """Synchronous read-back of bytes [offset, offset + nbytes) after all queued work.

        Small reads (the per-token ones: a finished flag, a token) go through a persistent
        mappable buffer, copied into by the same submit that runs the pending launches.
        """
        self._host_transfer()
        lo, hi = offset - offset % 4, -(-(offset + nbytes) // 4) * 4
        if hi - lo > READ_STAGING:
            self.flush()
            raw = self.gpu.queue.read_buffer(block.buf, lo, hi - lo)
            return bytes(memoryview(raw)[offset - lo:offset - lo + nbytes])
        if self._staging is None:
            u = self.gpu.usage
            self._staging = self.gpu.buffer(READ_STAGING, "read-back", u.MAP_READ | u.COPY_DST)
        staging = self._staging
        self.flush(after=lambda enc: enc.copy_buffer_to_buffer(block.buf, lo, staging, 0, hi - lo))
        staging.map_sync("READ_NOSYNC", 0, hi - lo)  # NOSYNC: the copy was just submitted
        try:
            raw = staging.read_mapped(0, hi - lo)
        finally:
            staging.unmap()
        return bytes(memoryview(raw)[offset - lo:offset - lo + nbytes])

    def _host_transfer(self) -> None:
        """Data moves between host and device outside the launches: no replay can repeat it."""
        if self.recording is not None:
            self.recording.replayable = False
        for obs in self.observers:
            obs.on_host_transfer()

    def release_caches(self) -> None:
        """Drop cached bind groups (they keep freed buffers alive)."""
        self.flush()
        self._bind_groups.clear()
        self._bg_gen += 1

    def wait(self) -> None:
        """Submit everything and block until the GPU has done it."""
        self.flush()
        self.gpu.sync()
