"""Indexing, joining and generated ops: embedding, index_select, index, index_put_, index_copy_,
cat, arange, tril/triu, cumsum."""

from __future__ import annotations

from typing import Any

import torch

from ...kernels.pointwise import Pointwise
from ..fallback import run_on_cpu
from ..launch import elementwise as ew
from ..launch import indexing as ik
from ..launch import reduction as rk
from ..tensors import empty
from .registry import impl, is_device

aten = torch.ops.aten


def _select(src: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    """src.index_select(dim, index) for an index of any shape (its shape replaces dim)."""
    flat = index.reshape(-1)
    out = empty([*src.shape[:dim], flat.numel(), *src.shape[dim + 1:]], src.dtype)
    ik.index_select(out, src, dim, flat)
    return out.view([*src.shape[:dim], *index.shape, *src.shape[dim + 1:]])


@impl("embedding")
def _embedding(weight: torch.Tensor, indices: torch.Tensor, padding_idx: int = -1, scale_grad_by_freq: bool = False,
               sparse: bool = False) -> torch.Tensor:
    return _select(weight, 0, indices)


@impl("index_select")
def _index_select(src: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    return _select(src, dim % max(src.dim(), 1), index)


def _single_index(indices: list[Any]) -> tuple[int, torch.Tensor] | None:
    """(dim, index) when exactly one integer index tensor is given (the common case)."""
    found = [(d, t) for d, t in enumerate(indices) if t is not None]
    if len(found) != 1:
        return None
    d, t = found[0]
    if t.dtype in (torch.bool, torch.uint8) or not is_device(t):
        return None
    return d, t


def _adjacent_indices(indices: list[Any]) -> tuple[int, list[torch.Tensor]] | None:
    """(first dim, index tensors) when integer device tensors index adjacent dimensions."""
    dims = [d for d, t in enumerate(indices) if t is not None]
    if not dims or dims != list(range(dims[0], dims[-1] + 1)):
        return None
    ts = [indices[d] for d in dims]
    if any(t.dtype in (torch.bool, torch.uint8) or t.dtype.is_floating_point or not is_device(t) for t in ts):
        return None
    return dims[0], ts


@impl("index.Tensor")
def _index(self: torch.Tensor, indices: list[torch.Tensor | None]) -> torch.Tensor:
    one = _single_index(indices)
    if one is not None:
        return _select(self, one[0], one[1])
    adj = _adjacent_indices(indices)
    if adj is None:  # boolean masks (data-dependent shapes), scattered index dimensions
        return run_on_cpu(aten.index.Tensor, self, indices)
    first, ts = adj
    bshape = list(torch.broadcast_shapes(*[t.shape for t in ts]))
    out = empty([*self.shape[:first], *bshape, *self.shape[first + len(ts):]], self.dtype)
    return ik.advanced_index(out, self, first, ts)


@impl("index_put_")
def _index_put_(self: torch.Tensor, indices: list[torch.Tensor | None], values: torch.Tensor,
                accumulate: bool = False) -> torch.Tensor:
    one = _single_index(indices)
    if one is None or accumulate or not is_device(values):
        return run_on_cpu(aten.index_put_.default, self, indices, values, accumulate)
    d, idx = one
    flat = idx.reshape(-1)
    shape = [*self.shape[:d], flat.numel(), *self.shape[d + 1:]]
    src = values.expand([*self.shape[:d], *idx.shape, *self.shape[d + 1:]]).reshape(shape) \
        if values.dim() else values.expand(shape)
    ik.index_copy(self, d, flat, src)
    return self


@impl("index_copy_")
def _index_copy_(self: torch.Tensor, dim: int, index: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return ik.index_copy(self, dim % max(self.dim(), 1), index.reshape(-1), source)


@impl("index_copy")
def _index_copy(self: torch.Tensor, dim: int, index: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    return _index_copy_(self.clone(), dim, index, source)


@impl("cat")
def _cat(tensors: list[torch.Tensor], dim: int = 0) -> torch.Tensor:
    parts = [t for t in tensors if not (t.dim() == 1 and t.numel() == 0)]  # legacy empty tensors
    if not parts:
        return empty([0], tensors[0].dtype)
    dim = dim % parts[0].dim()
    dtype = parts[0].dtype
    for t in parts[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    shape = list(parts[0].shape)
    shape[dim] = sum(t.shape[dim] for t in parts)
    return ik.cat(empty(shape, dtype), [t for t in parts if t.shape[dim]], dim)


@impl("cat.out")
def _cat_out(tensors: list[torch.Tensor], dim: int = 0, *, out: torch.Tensor) -> torch.Tensor:
    res = _cat(tensors, dim)
    if out.shape != res.shape:
        out.resize_(res.shape)
    ew.copy_into(out, res)
    return out


_ARANGE_F = Pointwise("arange", "s0 + s1 * f32(i)", "f32", "f32")
_ARANGE_I = Pointwise("arange", "s0 + s1 * i32(i)", "i32", "i32")


def _arange_len(start: Any, end: Any, step: Any) -> int:
    if all(isinstance(v, int) for v in (start, end, step)):
        return max(0, -(-(end - start) // step))
    return max(0, int(torch.ceil(torch.tensor((end - start) / step)).item()))


@impl("arange.start_out")
def _arange_out(start: Any, end: Any, step: Any = 1, *, out: torch.Tensor) -> torch.Tensor:
    n = _arange_len(start, end, step)
    if out.numel() != n:
        out.resize_([n])
    op = _ARANGE_F if out.dtype.is_floating_point else _ARANGE_I
    ew.run(op, out, [], [start, step])
    return out


@impl("arange", "arange.start", "arange.start_step")
def _arange(*bounds: Any, dtype: torch.dtype | None = None, layout: Any = None, device: Any = None,
            pin_memory: bool | None = None) -> torch.Tensor:
    """The factory form, registered itself: the composite one goes through resize_ and an out=
    call, which launch plans cannot repeat (transformers' masks call it several times a token)."""
    start, end, step = (0, bounds[0], 1) if len(bounds) == 1 else (*bounds, 1)[:3]
    if dtype is None:
        ints = all(isinstance(v, int) for v in (start, end, step))
        dtype = torch.int64 if ints else torch.get_default_dtype()
    return _arange_out(start, end, step, out=empty([_arange_len(start, end, step)], dtype))


for _name, _upper in (("tril", False), ("triu", True)):

    def _tri(self: torch.Tensor, diagonal: int = 0, _upper: bool = _upper) -> torch.Tensor:
        return ik.triangle(empty(self.shape, self.dtype), self, diagonal, _upper)

    def _tri_(self: torch.Tensor, diagonal: int = 0, _upper: bool = _upper) -> torch.Tensor:
        return ik.triangle(self, self, diagonal, _upper)

    def _tri_out(self: torch.Tensor, diagonal: int = 0, *, out: torch.Tensor, _upper: bool = _upper) -> torch.Tensor:
        if out.shape != self.shape:
            out.resize_(self.shape)
        return ik.triangle(out, self, diagonal, _upper)

    impl(_name)(_tri)
    impl(_name + "_")(_tri_)
    impl(_name + ".out")(_tri_out)


@impl("cumsum")
def _cumsum(self: torch.Tensor, dim: int, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    dt = dtype or (self.dtype if self.dtype.is_floating_point else torch.int64)
    return rk.cumsum(self, dim % max(self.dim(), 1), empty(self.shape, dt))


@impl("cumsum.out")
def _cumsum_out(self: torch.Tensor, dim: int, *, dtype: torch.dtype | None = None, out: torch.Tensor) -> torch.Tensor:
    if out.shape != self.shape:
        out.resize_(self.shape)
    return rk.cumsum(self, dim % max(self.dim(), 1), out)


def _isin(x: torch.Tensor, test: torch.Tensor, invert: bool, out: torch.Tensor | None = None) -> torch.Tensor:
    if out is None:
        out = empty(x.shape, torch.bool)
    elif out.shape != x.shape:
        out.resize_(x.shape)
    return ik.isin(out, x, test.reshape(-1), invert)


@impl("isin.Tensor_Tensor")
def _isin_tt(elements: torch.Tensor, test_elements: torch.Tensor, *, assume_unique: bool = False,
             invert: bool = False) -> torch.Tensor:
    return _isin(elements, test_elements, invert)


@impl("isin.Tensor_Tensor_out")
def _isin_tt_out(elements: torch.Tensor, test_elements: torch.Tensor, *, assume_unique: bool = False,
                 invert: bool = False, out: torch.Tensor) -> torch.Tensor:
    return _isin(elements, test_elements, invert, out)
