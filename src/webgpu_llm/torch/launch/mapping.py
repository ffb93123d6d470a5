"""Launching map kernels (kernels/mapping.py) over torch tensors."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ...kernels.mapping import MapInput, MapSpec, map_kernel
from ...kernels.strided import grid_1d
from ..context import ctx
from ..dtypes import dtype_of, name_of
from ..tensors import block
from .common import binding, compiled


def launch(key: Any, name: str, out: torch.Tensor, shape: Sequence[int], out_strides: Sequence[int],
           inputs: Sequence[torch.Tensor], kinds: Sequence[str], body: Callable[[int], str],
           extra: bytes, scatter: bool = False) -> None:
    """Run a map kernel over the index space `shape` (collapsed), writing into `out`.

    `out_strides` give each element's place in `out` (its own strides, for plain maps).
    `body(rank)` returns the WGSL body (see map_kernel); `extra` the kernel-specific parameter
    bytes; `key` identifies the body (the kernel cache adds dtypes, rank and aliasing).
    `scatter`: the body computes where each element goes, so `out` is written element-wise.
    """
    n = 1
    for s in shape:
        n *= s
    if n == 0:
        return
    rank = len(shape)
    dense = not scatter and out.is_contiguous()
    out_dt = dtype_of(out.dtype)
    yb = block(out)
    specs = tuple(MapInput(name_of(t.dtype), block(t) is yb, k) for t, k in zip(inputs, kinds))
    kernel = compiled(("map", key, specs, out_dt.name, rank, dense),
                      lambda: map_kernel(MapSpec(name, out_dt.name, dense, rank, specs, body(rank))))
    head = struct.pack(f"<{2 + 2 * rank}I", n, out.storage_offset(), *shape, *out_strides)
    binds = [binding(out)] + [binding(t) for t, s in zip(inputs, specs) if not s.alias]
    if dense and out_dt.size < 4:
        off, vec = out.storage_offset(), out_dt.per_word
        threads = (off + n - 1) // vec - off // vec + 1
    else:
        threads = n
    ctx().stream.launch(kernel, binds, head + extra, grid_1d(threads))
