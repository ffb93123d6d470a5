"""Launching reductions, softmax and cumsum (kernels/reduction.py) over torch tensors."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import torch

from ...kernels.reduction import (
    CUMSUM_WG,
    CumsumSpec,
    ReduceSpec,
    SoftmaxSpec,
    cumsum_kernel,
    reduce_kernel,
    softmax_kernel,
)
from ...kernels.strided import grid_1d, grid_rows
from ..context import ctx
from ..dtypes import name_of
from .common import binding, collapse, compiled


def split(t: torch.Tensor, dims: Sequence[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(outer shape, outer strides, inner shape, inner strides) of `t` reducing over `dims`."""
    red = set(dims)
    keep = [d for d in range(t.dim()) if d not in red]
    return ([t.shape[d] for d in keep], [t.stride(d) for d in keep],
            [t.shape[d] for d in sorted(red)], [t.stride(d) for d in sorted(red)])


def reduce(op: str, x: torch.Tensor, dims: Sequence[int], out: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """out (shape: x's kept dimensions, keepdim or not) = op over `dims` of x.

    op: sum | max | min | all | any | argmax | argmin; `mean` divides a sum by the count.
    """
    oshape, ostr_in, ishape, istr = split(x, dims)
    kept = [d for d in range(x.dim()) if d not in set(dims)]
    out_str = [out.stride(d) for d in kept] if out.dim() == x.dim() else list(out.stride())
    cshape, (cstr_out, cstr_in) = collapse(oshape, [out_str, ostr_in])
    ishape_c, (istr_c,) = collapse(ishape, [istr])
    count = 1
    for s in ishape:
        count *= s
    n_out = out.numel()
    if n_out == 0:
        return out
    floating = x.dtype.is_floating_point or mean
    spec = ReduceSpec(op, name_of(x.dtype), name_of(out.dtype), "f32" if floating else "i32", len(cshape),
                      len(ishape_c), mean)
    kernel = compiled(("reduce", spec), lambda: reduce_kernel(spec))
    words = [n_out, out.storage_offset(), *cshape, *cstr_out, x.storage_offset(), *cstr_in, *ishape_c, *istr_c,
             count]
    params = struct.pack(f"<{len(words)}I", *words) + struct.pack("<f", 1.0 / max(count, 1))
    ctx().stream.launch(kernel, [binding(out), binding(x)], params, grid_rows(n_out))
    return out


def _along(x: torch.Tensor, dim: int, out: torch.Tensor) -> tuple[int, list[int]]:
    """(outer rank, parameter words) of a kernel walking x along `dim` (softmax, cumsum)."""
    oshape, ostr_in, _, _ = split(x, [dim])
    out_str = [out.stride(d) for d in range(x.dim()) if d != dim]
    cshape, (cstr_out, cstr_in) = collapse(oshape, [out_str, ostr_in])
    rows = out.numel() // x.shape[dim]
    return len(cshape), [rows, out.storage_offset(), *cshape, *cstr_out, x.storage_offset(), *cstr_in,
                         x.shape[dim], x.stride(dim), out.stride(dim)]


def softmax(x: torch.Tensor, dim: int, out: torch.Tensor, log: bool = False) -> torch.Tensor:
    """out = (log_)softmax(x) along `dim` (out has x's shape)."""
    if out.numel() == 0:
        return out
    ro, words = _along(x, dim, out)
    spec = SoftmaxSpec(name_of(x.dtype), name_of(out.dtype), ro, log)
    kernel = compiled(("softmax", spec), lambda: softmax_kernel(spec))
    ctx().stream.launch(kernel, [binding(out), binding(x)], struct.pack(f"<{len(words)}I", *words),
                        grid_rows(words[0]))
    return out


def cumsum(x: torch.Tensor, dim: int, out: torch.Tensor) -> torch.Tensor:
    """out = x.cumsum(dim)."""
    if out.numel() == 0:
        return out
    if x.dim() == 0:
        x, out = x.reshape(1), out.reshape(1)
    ro, words = _along(x, dim, out)
    spec = CumsumSpec(name_of(x.dtype), name_of(out.dtype), "f32" if out.dtype.is_floating_point else "i32", ro)
    kernel = compiled(("cumsum", spec), lambda: cumsum_kernel(spec))
    ctx().stream.launch(kernel, [binding(out), binding(x)], struct.pack(f"<{len(words)}I", *words),
                        grid_1d(words[0], CUMSUM_WG))
    return out
