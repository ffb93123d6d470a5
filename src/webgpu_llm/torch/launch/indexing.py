"""Launching the data-dependent map kernels (kernels/indexing.py): index_select / embedding,
index_copy, tril/triu, isin, cat, advanced indexing."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...kernels.indexing import advanced_index_body, cat_body, index_body, isin_body, triangle_body
from ..dtypes import dtype_of
from ..tensors import restride
from . import mapping
from .common import collapse, pack


def _around(shape: Sequence[int], strides: list[list[int]], dim: int) -> tuple[list[int], list[list[int]], int]:
    """Collapse the dimensions before and after `dim` separately; returns the new `dim`."""
    pre_s, pre_st = collapse(shape[:dim], [s[:dim] for s in strides]) if dim else ([], [[] for _ in strides])
    post_s, post_st = collapse(shape[dim + 1:], [s[dim + 1:] for s in strides]) \
        if dim + 1 < len(shape) else ([], [[] for _ in strides])
    new_shape = [*pre_s, shape[dim], *post_s]
    new_strides = [[*a, s[dim], *b] for a, b, s in zip(pre_st, post_st, strides)]
    return new_shape, new_strides, len(pre_s)


def _run_index(name: str, out: torch.Tensor, space: torch.Tensor, out_st: list[int], src: torch.Tensor,
               src_st: list[int], dim: int, index: torch.Tensor, step: int, size: int, scatter: bool) -> None:
    if index.dim() != 1:
        raise ValueError(f"{name} needs a 1-d index")
    shape, (ost, sst), d = _around(list(space.shape), [out_st, src_st], dim)
    kind = dtype_of(out.dtype).kind
    words = [src.storage_offset(), *sst, step, index.storage_offset(), index.stride(0), size]
    mapping.launch((name, d), name, out, shape, ost, [src, index], [kind, "i32"],
                   lambda r: index_body(r, d, scatter), pack(words), scatter=scatter)


def index_select(out: torch.Tensor, src: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """out = src.index_select(dim, index) for a 1-d index (out: src's shape, len(index) at dim)."""
    sst = list(src.stride())
    sst[dim] = 0
    _run_index("index_select", out, out, list(out.stride()), src, sst, dim, index, src.stride(dim),
               src.shape[dim], False)
    return out


def index_copy(out: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """out.index_copy_(dim, index, src): src's slice j goes to out's slice index[j] along dim."""
    ost = list(out.stride())
    ost[dim] = 0
    _run_index("index_copy", out, src, ost, src, list(src.stride()), dim, index, out.stride(dim),
               out.shape[dim], True)
    return out


def triangle(out: torch.Tensor, x: torch.Tensor, k: int, upper: bool) -> torch.Tensor:
    """out = x.triu(k) if upper else x.tril(k) (the last two dimensions)."""
    lead = list(x.shape[:-2])
    lead_s, (lo, lx) = collapse(lead, [list(out.stride()[:-2]), list(x.stride()[:-2])]) if lead else ([], [[], []])
    shape = [*lead_s, *x.shape[-2:]]
    ost = [*lo, *out.stride()[-2:]]
    xst = [*lx, *x.stride()[-2:]]
    kind = dtype_of(out.dtype).kind
    mapping.launch(("triangle", upper), "triangle", out, shape, ost, [x], [kind],
                   lambda r: triangle_body(r, upper, kind), pack([x.storage_offset(), *xst, k]))
    return out


def isin(out: torch.Tensor, x: torch.Tensor, test: torch.Tensor, invert: bool) -> torch.Tensor:
    """out = torch.isin(x, test) (test is 1-d; each element scans it)."""
    shape, (ost, xst) = collapse(list(x.shape), [list(out.stride()), list(x.stride())])
    kind = "f32" if torch.promote_types(x.dtype, test.dtype).is_floating_point else "i32"
    words = [x.storage_offset(), *xst, test.storage_offset(), test.stride(0), test.numel()]
    mapping.launch(("isin", invert), "isin", out, shape, ost, [x, test], [kind, kind],
                   lambda r: isin_body(r, invert), pack(words))
    return out


CAT_INPUTS = 4  # inputs per launch


def cat(out: torch.Tensor, parts: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    """out = torch.cat(parts, dim), one launch per CAT_INPUTS parts."""
    kind = dtype_of(out.dtype).kind
    start = 0
    for g in range(0, len(parts), CAT_INPUTS):
        group = list(parts[g:g + CAT_INPUTS])
        size = sum(p.shape[dim] for p in group)
        shape = list(out.shape)
        shape[dim] = size
        region = restride(out, shape, out.stride(), out.storage_offset() + start * out.stride(dim))
        cshape, cstrides, d = _around(shape, [list(region.stride())] + [list(p.stride()) for p in group], dim)
        words: list[int] = []
        for p, st in zip(group, cstrides[1:]):
            words += [p.storage_offset(), *st]
        end = 0
        for p in group:
            end += p.shape[dim]
            words.append(end)
        n = len(group)
        mapping.launch(("cat", n, d), "cat", region, cshape, cstrides[0], group, [kind] * n,
                       lambda r: cat_body(r, n, d), pack(words))  # noqa: B023  (called within the launch)
        start += size
    return out


def advanced_index(out: torch.Tensor, src: torch.Tensor, first: int, indices: Sequence[torch.Tensor]) -> torch.Tensor:
    """out = src[..., i0, i1, ...] with integer index tensors on the adjacent dimensions
    first, first + 1, ... (they broadcast together; their shape replaces those dimensions)."""
    n = len(indices)
    bshape = list(torch.broadcast_shapes(*[t.shape for t in indices]))
    nb = len(bshape)
    shape = list(out.shape)
    pre, post = list(range(first)), list(range(first + n, src.dim()))
    # source strides over the output's dimensions (0 on the broadcast index dimensions)
    sst = [src.stride(q) for q in pre] + [0] * nb + [src.stride(q) for q in post]
    words = [src.storage_offset(), *sst]
    for t in indices:
        ist = [0] * (nb - t.dim()) + [0 if s == 1 else st for s, st in zip(t.shape, t.stride())]
        words += [t.storage_offset(), *ist]
    words += [src.stride(first + k) for k in range(n)] + [src.shape[first + k] for k in range(n)]
    kind = dtype_of(out.dtype).kind

    mapping.launch(("advanced_index", first, n, nb), "advanced_index", out, shape, list(out.stride()),
                   [src, *indices], [kind] + ["i32"] * n,
                   lambda r: advanced_index_body(r, first, n, nb), pack(words))
    return out
