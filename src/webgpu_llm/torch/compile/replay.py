"""Record a graph's kernel launches once; replay them as a `Program`, with no Python per op.

Every op of a compiled graph is one of the device's own kernels, so running the graph once
with the stream in recording mode yields the exact list of (pipeline, bind group, grid) it
needs. Replaying that list is what the native model engine does with its Programs: the
dispatches go straight to the native encoder, in a few submits of `Stream.replay_chunk`
dispatches each (0: one submit), so the GPU starts while the CPU encodes the rest.

For the launches to stay valid, a recording owns the memory they touch: the intermediates
(allocated from a capture, see memory.Capture), and private copies of the inputs that change
from call to call (input ids, positions, masks), which each replay refreshes with buffer
copies. Inputs that keep their address (parameters, static KV caches) are bound in place.
Outputs are copied into fresh tensors, since the next replay overwrites the recorded ones.

A graph is recorded the second time it is called with the same shapes (a prefill of a new
length runs eagerly, through the same kernels), at most MAX_RECORDINGS shapes per graph, and
graphs that move data through the host (CPU fallbacks, read-backs) are never replayed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ...runtime.program import Program
from ..context import ctx
from ..launch.elementwise import copy_into
from ..memory import Block, Capture
from ..stream import ParamArena, Recording
from ..tensors import block, empty
from ..transfer import upload_into

MAX_RECORDINGS = 8  # per graph


def is_static(t: torch.Tensor) -> bool:
    """Inputs whose memory stays put between calls: parameters and marked static addresses."""
    return isinstance(t, torch.nn.Parameter) or hasattr(t, "_dynamo_static_input_type")


def _meta(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return (a.dtype, tuple(a.shape), a.stride(), a.device.type)
    return a


def _copyable(t: torch.Tensor) -> bool:
    """Can a whole-word buffer copy move this tensor's bytes?"""
    n = t.numel() * t.element_size()
    return t.is_contiguous() and n % 4 == 0 and (t.storage_offset() * t.element_size()) % 4 == 0 and n > 0


@dataclass
class Recorded:
    program: Program
    capture: Capture
    recording: Recording
    static: list[tuple[int, torch.Tensor]]  # (arg index, the tensor bound in place)
    staged: list[tuple[int, torch.Tensor]]  # (arg index, private copy)
    outputs: list[Any]  # capture-owned tensors, or constants

    def matches(self, args: tuple[Any, ...]) -> bool:
        """Are the in-place inputs the same tensors? (Holding them keeps their buffers alive.)"""
        return all(args[i] is t for i, t in self.static)

    def rebind(self, args: tuple[Any, ...]) -> bool:
        """Point the recording at new in-place inputs of the same geometry (a new static cache
        each `generate` call): the bind groups that use their buffers are made again. False
        where that cannot be done (then the graph is recorded again)."""
        moved: dict[Block, Block] = {}
        for i, old in self.static:
            new = args[i]
            if new is old:
                continue
            if (not isinstance(new, torch.Tensor) or new.device.type != "webgpu" or new.dtype != old.dtype
                    or new.shape != old.shape or new.stride() != old.stride()
                    or new.storage_offset() != old.storage_offset()):
                return False
            ob, nb = block(old), block(new)
            if moved.setdefault(ob, nb) is not nb or nb.size < ob.size:
                return False
        if not moved:
            return True
        if len(set(moved.values())) != len(moved) or any(b in moved for b in moved.values()):
            return False  # two old buffers onto one, or buffers trading places
        for o in self.outputs:  # an output in an input's memory would be read from the old one
            if isinstance(o, torch.Tensor) and block(o) in moved:
                return False
        stream = ctx().stream
        rec = self.recording
        for j, (blocks, slot) in enumerate(rec.bindings):
            if not any(b in moved for b in blocks):
                continue
            blocks = [moved.get(b, b) for b in blocks]
            name, kernel, _, grid = rec.dispatches[j]
            bg = stream.new_bind_group(kernel, blocks, slot)
            rec.dispatches[j] = (name, kernel, bg, grid)
            rec.bindings[j] = (blocks, slot)
            self.program.dispatches[j].bind_group = bg
        self.program.invalidate()
        self.static = [(i, args[i]) for i, _ in self.static]
        return True

    def run(self, args: tuple[Any, ...]) -> list[Any]:
        stream = ctx().stream
        copies: list[tuple[Block, int, Block, int, int]] = []
        for i, dst in self.staged:
            src = args[i]
            if src.device.type != "webgpu":
                upload_into(dst, src)
            elif _copyable(src):
                size = src.element_size()
                copies.append((block(src), src.storage_offset() * size, block(dst), 0, src.numel() * size))
            else:
                copy_into(dst, src)
        results: list[Any] = []
        after: list[tuple[Block, int, Block, int, int]] = []
        late: list[tuple[torch.Tensor, torch.Tensor]] = []
        for o in self.outputs:
            if not isinstance(o, torch.Tensor):
                results.append(o)
                continue
            fresh = empty(o.shape, o.dtype)
            results.append(fresh)
            if _copyable(o):
                size = o.element_size()
                after.append((block(o), o.storage_offset() * size, block(fresh), 0, o.numel() * size))
            else:
                late.append((fresh, o))
        program = self.program
        n = len(program)
        step = stream.replay_chunk if stream.replay_chunk > 0 else max(n, 1)
        bounds = [(lo, min(lo + step, n)) for lo in range(0, n, step)] or [(0, 0)]
        # the last part carries less than `step` when n is not a multiple: fold a small
        # remainder into the part before it, a submit costs more than a few dispatches
        if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < step // 2:
            bounds[-2:] = [(bounds[-2][0], n)]

        def part(lo: int, hi: int, first: bool, last: bool) -> Callable[[Any], None]:
            def encode(enc: Any) -> None:
                if first:
                    for s, so, d, do, size in copies:
                        enc.copy_buffer_to_buffer(s.buf, so, d.buf, do, size)
                cpass = enc.begin_compute_pass()
                program.encode(cpass, 1, lo, hi)
                cpass.end()
                if last:
                    for s, so, d, do, size in after:
                        enc.copy_buffer_to_buffer(s.buf, so, d.buf, do, size)
            return encode

        # The first submit carries the launches queued so far (they may produce the inputs)
        # and the input copies; the last one the output copies. Several submits, so the GPU
        # starts before the CPU has encoded the whole graph.
        for j, (lo, hi) in enumerate(bounds):
            stream.flush(after=part(lo, hi, j == 0, j == len(bounds) - 1))
        for fresh, o in late:
            copy_into(fresh, o)
        return results

    def release(self) -> None:
        """Give the recording's memory back to the pool (it is never replayed again)."""
        if self.capture.blocks:
            self.capture.release(ctx().pool)

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # interpreter shutdown
            pass


class GraphRunner:
    """The callable a compiled FX graph becomes."""

    def __init__(self, fn: Callable[..., Any], name: str = "graph", mutated: frozenset[int] = frozenset()) -> None:
        self.fn = fn
        self.name = name
        self.mutated = mutated  # inputs the graph writes: bound in place, never copied
        self.seen: dict[Any, int] = {}
        self.recorded: dict[Any, Recorded] = {}
        self.unreplayable: set[Any] = set()
        self.replays = 0
        self.fusions: dict[str, int] = {}  # what the fusion passes did to this graph
        self._keyed: list[int] | None = None  # the arguments a recording depends on (see _key)

    def _key(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Shapes of the inputs that change between calls, and the scalar arguments (sizes of
        dynamic dimensions). Parameters and caches are left out: dynamo guards their shapes,
        and `Recorded.matches` checks they are the same tensors."""
        if self._keyed is None:
            self._keyed = [i for i, a in enumerate(args)
                           if not (isinstance(a, torch.Tensor) and (is_static(a) or i in self.mutated))]
        return tuple(_meta(args[i]) for i in self._keyed)

    def __call__(self, *args: Any) -> Any:
        key = self._key(args)
        rec = self.recorded.get(key)
        if rec is not None:
            if rec.matches(args) or rec.rebind(args):
                self.replays += 1
                return rec.run(args)
            rec.release()
            del self.recorded[key]
        if len(self.seen) > 4096:  # shapes that never came back
            self.seen.clear()
        self.seen[key] = self.seen.get(key, 0) + 1
        # Record on second sight, and only while there is room: a graph whose shapes keep
        # changing (a growing dynamic cache) would otherwise record and evict on every call.
        if self.seen[key] < 2 or key in self.unreplayable or len(self.recorded) >= MAX_RECORDINGS:
            return self.fn(*args)
        return self._record(key, args)

    def _record(self, key: Any, args: tuple[Any, ...]) -> Any:
        c = ctx()
        stream, pool = c.stream, c.pool
        stream.flush()
        capture = Capture()
        pool.capture = capture
        recording = Recording(ParamArena(c.gpu, stream.align))
        try:
            call_args = list(args)
            static: list[tuple[int, torch.Tensor]] = []
            staged: list[tuple[int, torch.Tensor]] = []
            for i, a in enumerate(args):
                if not isinstance(a, torch.Tensor):
                    continue
                if a.device.type == "webgpu" and (is_static(a) or i in self.mutated):
                    static.append((i, a))
                    continue
                priv = empty(a.shape, a.dtype)
                if a.device.type == "webgpu":
                    copy_into(priv, a)
                else:
                    upload_into(priv, a)
                staged.append((i, priv))
                call_args[i] = priv
            stream.flush()
            stream.recording = recording
            try:
                out = self.fn(*call_args)
                stream.flush()  # runs this first call (and uploads the recording's parameters)
            finally:
                stream.recording = None
        finally:
            pool.capture = None
            capture.recording = False
        outs = list(out) if isinstance(out, (list, tuple)) else [out]
        # the caller gets copies: the recorded outputs are overwritten by every replay
        fresh = [o.clone() if isinstance(o, torch.Tensor) else o for o in outs]
        if recording.replayable:
            self.recorded[key] = Recorded(recording.program(c.gpu, self.name), capture, recording, static, staged, outs)
        else:
            self.unreplayable.add(key)
            capture.release(pool)
        return type(out)(fresh) if isinstance(out, (list, tuple)) else fresh[0]
