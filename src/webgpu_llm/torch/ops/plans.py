"""Launch plans: an op called again with the same shapes repeats its launches without Python.

Eager decoding calls the same ops with the same shapes, strides and scalars token after token.
The first call of an op with a given signature runs its Python implementation while the
stream and the allocator are watched; what it did (which fresh tensors it allocated, which
kernels it launched on which of its inputs' and allocations' buffers, with which parameter
blocks) becomes the plan for that signature. Later calls allocate the same tensors and issue
the same launches on the new buffers: the shape logic, type promotion, dimension collapsing
and parameter packing run once per signature instead of once per call.

An op whose implementation reads data back, writes from the host, resizes an argument or
returns a view is not planned (its signature is remembered as such, so it is not watched again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .. import context
from ..context import ctx
from ..launch.common import binding
from ..memory import Block, size_class
from ..stream import FastLaunch
from ..tensors import ALLOC_OBSERVERS, _create, block

Tensor = torch.Tensor
_CTX: list[Any] = []  # the context, once opened (saves a call per op)


def _context() -> Any:
    c = context.ctx()
    _CTX.append(c)
    return c


_NOT_PLANNABLE = object()
MAX_PLANS = 4096  # per op; the table starts over when full
_TABLES: list[dict[Any, Any]] = []  # every planned op's table (see clear)


def clear() -> None:
    """Forget every op's plans. A plan repeats the kernels its first call chose, so whoever
    changes that choice (a kernel's tuning: launch/settings.py) clears them: the
    next calls plan again under the new setting."""
    for plans in _TABLES:
        plans.clear()


def signature(args: tuple[Any, ...], kwargs: dict[str, Any]
              ) -> tuple[tuple[Any, ...], list[Block], list[torch.Tensor]] | None:
    """What an op's launches may depend on (tensor metadata, buffer sharing, scalar values),
    the blocks of the tensor arguments and the tensors themselves, in order. None for host
    tensors and the like."""
    key: list[Any] = []
    blocks: list[Block] = []
    tensors: list[torch.Tensor] = []
    for a in (args if not kwargs else (*args, *kwargs.values())):
        if isinstance(a, Tensor):
            try:
                b = a.untyped_storage()._wg.block
            except AttributeError:  # not a webgpu tensor
                return None
            share = blocks.index(b) if b in blocks else -1
            blocks.append(b)
            tensors.append(a)
            key.append((a.dtype, a.shape, a.stride(), a.storage_offset(), share))
        elif isinstance(a, (list, tuple)):
            sub = signature(tuple(a), {})
            if sub is None:
                return None
            key.append(sub[0])
            # a block shared with an earlier argument shows in the nested key only relative to
            # the list: record the sharing with the outer arguments too
            key.append(tuple(blocks.index(o) if o in blocks else -1 for o in sub[1]))
            blocks.extend(sub[1])
            tensors.extend(sub[2])
        else:  # with its type: 1, 1.0 and True are equal keys but give different dtypes
            key.append((a.__class__, a))
    if kwargs:
        key.append(tuple(kwargs))
    return tuple(key), blocks, tensors


class _Watcher:
    """Records the allocations and launches of one op call."""

    def __init__(self) -> None:
        self.allocs: list[torch.Tensor] = []
        self.launches: list[tuple[Any, list[Block], bytes, tuple[int, int, int]]] = []
        self.ok = True

    def on_alloc(self, t: torch.Tensor) -> None:
        self.allocs.append(t)

    def on_launch(self, kernel: Any, blocks: list[Block], params: bytes, grid: tuple[int, int, int]) -> None:
        self.launches.append((kernel, list(blocks), params, grid))

    def on_host_transfer(self) -> None:
        self.ok = False


class Plan:
    """Replays one op call: allocate, launch, return."""

    def __init__(self, allocs: list[tuple[list[int], torch.dtype, int]],
                 launches: list[tuple[Any, list[tuple[bool, int]], bytes, tuple[int, int, int]]],
                 results: list[tuple[bool, int]], single: bool, n_inputs: int) -> None:
        # allocations with their pool size class worked out once
        self.allocs = [(shape, dtype, nbytes, size_class(nbytes)) for shape, dtype, nbytes in allocs]
        self.launches = launches
        # the same launches with their buffers as indices into inputs + allocations
        self.fast = [FastLaunch(kernel, tuple(i if is_input else n_inputs + i for is_input, i in refs), params, grid)
                     for kernel, refs, params, grid in launches]
        self.results = results  # (is an input, index)
        self.single = single

    def run(self, tensors: list[torch.Tensor], blocks: list[Block]) -> Any:
        c = _CTX[0] if _CTX else _context()
        pool = c.pool
        alloc = pool.alloc_class
        made = []
        all_blocks = blocks  # the signature's list, ours to extend
        for shape, dtype, nbytes, cls in self.allocs:
            t = _create(shape, dtype)
            a = t.untyped_storage()._wg = alloc(cls, nbytes)
            if ALLOC_OBSERVERS:  # an enclosing op being planned sees these too
                for obs in ALLOC_OBSERVERS:
                    obs(t)
            made.append(t)
            all_blocks.append(a.block)
        if pool.big:  # some block is over the binding limit: is it one of ours?
            limit = c.gpu.max_binding
            for i, t in enumerate(tensors):
                if blocks[i].size > limit:
                    binding(t)  # raises the explanatory error
        stream = c.stream
        if stream.recording is None and not stream.observers:
            stream.launch_planned(self.fast, all_blocks)
        else:
            launch = stream.launch
            for f in self.fast:
                launch(f.kernel, [all_blocks[i] for i in f.idx], f.params, f.grid)
        if self.single:
            is_input, i = self.results[0]
            return tensors[i] if is_input else made[i]
        return tuple(tensors[i] if is_input else made[i] for is_input, i in self.results)


def _build(w: _Watcher, tensors: list[torch.Tensor], result: Any) -> Plan | None:
    if not w.ok or not all(t.is_contiguous() and t.storage_offset() == 0 for t in w.allocs):
        return None
    results = [result] if isinstance(result, torch.Tensor) else list(result) if isinstance(result, tuple) else None
    if results is None or not all(isinstance(r, torch.Tensor) for r in results):
        return None
    in_blocks = [block(t) for t in tensors]
    alloc_blocks = [block(t) for t in w.allocs]

    def ref(b: Block) -> tuple[bool, int] | None:
        for i, o in enumerate(in_blocks):
            if o is b:
                return True, i
        for i, o in enumerate(alloc_blocks):
            if o is b:
                return False, i
        return None

    launches = []
    for kernel, blocks, params, grid in w.launches:
        refs = [ref(b) for b in blocks]
        if any(r is None for r in refs):
            return None
        launches.append((kernel, refs, params, grid))
    # results: an input returned as is (in-place ops), or an allocation returned whole
    allocs = [(list(t.shape), t.dtype, t.numel() * t.element_size()) for t in w.allocs]
    res_refs = []
    for r in results:
        i = next((i for i, t in enumerate(tensors) if t is r), None)
        if i is not None:
            res_refs.append((True, i))
            continue
        j = next((j for j, t in enumerate(w.allocs) if block(t) is block(r)), None)
        if j is None or not r.is_contiguous() or r.storage_offset() or r.numel() != w.allocs[j].numel():
            return None
        allocs[j] = (list(r.shape), r.dtype, allocs[j][2])  # allocate straight in the returned shape
        if r.dtype != w.allocs[j].dtype:
            return None
        res_refs.append((False, j))
    return Plan(allocs, launches, res_refs, isinstance(result, torch.Tensor), len(tensors))


def planned(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an op implementation with per-signature launch plans."""
    plans: dict[Any, Any] = {}
    _TABLES.append(plans)

    def run(*args: Any, **kwargs: Any) -> Any:
        sig = signature(args, kwargs)
        if sig is None:
            return fn(*args, **kwargs)
        key, blocks, tensors = sig
        plan = plans.get(key)
        if plan is not None:
            if plan is _NOT_PLANNABLE:
                return fn(*args, **kwargs)
            return plan.run(tensors, blocks)
        before = [(t.shape, t.stride(), t.storage_offset()) for t in tensors]
        stream = ctx().stream
        w = _Watcher()
        stream.observers.append(w)
        ALLOC_OBSERVERS.append(w.on_alloc)
        try:
            result = fn(*args, **kwargs)
        finally:
            stream.observers.remove(w)
            ALLOC_OBSERVERS.remove(w.on_alloc)
        if len(plans) >= MAX_PLANS:
            plans.clear()
        # an op that resized an argument (out= variants) changed more than buffers
        resized = any(b != (t.shape, t.stride(), t.storage_offset()) for b, t in zip(before, tensors))
        plans[key] = (None if resized else _build(w, tensors, result)) or _NOT_PLANNABLE
        return result

    run.__wrapped__ = fn  # type: ignore[attr-defined]
    run.__name__ = getattr(fn, "__name__", "op")
    return run
