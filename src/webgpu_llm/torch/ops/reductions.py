"""Reductions (sum, mean, max, min, argmax, all, any, ...) and softmax."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..launch import reduction as rk
from ..tensors import empty
from .registry import impl

aten = torch.ops.aten


def _dims(x: torch.Tensor, dim: Any) -> list[int]:
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return list(range(x.dim()))
    if isinstance(dim, int):
        dim = [dim]
    return sorted({d % max(x.dim(), 1) for d in dim})


def _out_shape(x: torch.Tensor, dims: Sequence[int], keepdim: bool) -> list[int]:
    return [1 if d in dims else s for d, s in enumerate(x.shape)] if keepdim else \
        [s for d, s in enumerate(x.shape) if d not in dims]


def _reduce(op: str, x: torch.Tensor, dim: Any, keepdim: bool, dtype: torch.dtype,
            out: torch.Tensor | None = None, mean: bool = False) -> torch.Tensor:
    dims = _dims(x, dim) if x.dim() else []
    shape = _out_shape(x, dims, keepdim)
    if out is None:
        out = empty(shape, dtype)
    elif list(out.shape) != shape:
        out.resize_(shape)
    if x.dim() == 0:  # a scalar reduces to itself
        x = x.reshape(1)
        dims = [0]
        rk.reduce(op, x, dims, out.reshape(1) if out.dim() == 0 else out, mean)
        return out
    return rk.reduce(op, x, dims, out, mean)


def _sum_dtype(x: torch.Tensor, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    return x.dtype if x.dtype.is_floating_point else torch.int64


@impl("sum.dim_IntList")
def _sum(x: torch.Tensor, dim: Any, keepdim: bool = False, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    return _reduce("sum", x, dim, keepdim, _sum_dtype(x, dtype))


@impl("sum")
def _sum_all(x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    return _reduce("sum", x, None, False, _sum_dtype(x, dtype))


@impl("sum.IntList_out")
def _sum_out(x: torch.Tensor, dim: Any, keepdim: bool = False, *, dtype: torch.dtype | None = None,
             out: torch.Tensor) -> torch.Tensor:
    return _reduce("sum", x, dim, keepdim, out.dtype, out)


@impl("mean.dim")
def _mean(x: torch.Tensor, dim: Any, keepdim: bool = False, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    return _reduce("sum", x, dim, keepdim, dtype or x.dtype, mean=True)


@impl("mean")
def _mean_all(x: torch.Tensor, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    return _reduce("sum", x, None, False, dtype or x.dtype, mean=True)


@impl("mean.out")
def _mean_out(x: torch.Tensor, dim: Any, keepdim: bool = False, *, dtype: torch.dtype | None = None,
              out: torch.Tensor) -> torch.Tensor:
    return _reduce("sum", x, dim, keepdim, out.dtype, out, mean=True)


for _op in ("max", "min"):

    def _extreme(x: torch.Tensor, dim: Any = (), keepdim: bool = False, _op: str = _op) -> torch.Tensor:
        return _reduce(_op, x, dim, keepdim, x.dtype)

    def _extreme_out(x: torch.Tensor, dim: Any = (), keepdim: bool = False, *, out: torch.Tensor,
                     _op: str = _op) -> torch.Tensor:
        return _reduce(_op, x, dim, keepdim, out.dtype, out)

    def _extreme_all(x: torch.Tensor, _op: str = _op) -> torch.Tensor:
        return _reduce(_op, x, None, False, x.dtype)

    def _extreme_dim(x: torch.Tensor, dim: int, keepdim: bool = False, _op: str = _op) -> tuple[torch.Tensor, ...]:
        values = _reduce(_op, x, dim, keepdim, x.dtype)
        return values, _reduce("arg" + _op, x, dim, keepdim, torch.int64)

    impl(f"a{_op}")(_extreme)
    impl(f"a{_op}.out")(_extreme_out)
    impl(_op)(_extreme_all)
    impl(f"{_op}.dim")(_extreme_dim)

    def _arg(x: torch.Tensor, dim: int | None = None, keepdim: bool = False, _op: str = _op) -> torch.Tensor:
        if dim is None:
            return _reduce("arg" + _op, x.reshape(-1), 0, False, torch.int64).reshape(
                [1] * x.dim() if keepdim else [])
        return _reduce("arg" + _op, x, dim, keepdim, torch.int64)

    def _arg_out(x: torch.Tensor, dim: int | None = None, keepdim: bool = False, *, out: torch.Tensor,
                 _op: str = _op) -> torch.Tensor:
        out.copy_(_arg(x, dim, keepdim))
        return out

    impl(f"arg{_op}")(_arg)
    impl(f"arg{_op}.out")(_arg_out)


for _op in ("all", "any"):

    def _logical(x: torch.Tensor, dim: Any = None, keepdim: bool = False, _op: str = _op) -> torch.Tensor:
        return _reduce(_op, x, dim, keepdim, torch.bool)

    def _logical_out(x: torch.Tensor, dim: Any = None, keepdim: bool = False, *, out: torch.Tensor,
                     _op: str = _op) -> torch.Tensor:
        return _reduce(_op, x, dim, keepdim, out.dtype, out)

    for _ov in ("", ".dim", ".dims"):
        impl(_op + _ov)(_logical)
    for _ov in (".all_out", ".out", ".dims_out"):
        impl(_op + _ov)(_logical_out)


@impl("_softmax")
def _softmax(x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor:
    out = empty(x.shape, torch.float32 if half_to_float else x.dtype)
    return rk.softmax(x, dim % max(x.dim(), 1), out) if x.dim() else out.fill_(1.0)


@impl("_softmax.out")
def _softmax_out(x: torch.Tensor, dim: int, half_to_float: bool, *, out: torch.Tensor) -> torch.Tensor:
    if out.shape != x.shape:
        out.resize_(x.shape)
    return rk.softmax(x, dim % max(x.dim(), 1), out)


@impl("_log_softmax")
def _log_softmax(x: torch.Tensor, dim: int, half_to_float: bool) -> torch.Tensor:
    out = empty(x.shape, torch.float32 if half_to_float else x.dtype)
    return rk.softmax(x, dim % max(x.dim(), 1), out, log=True) if x.dim() else out.fill_(0.0)


@impl("_log_softmax.out")
def _log_softmax_out(x: torch.Tensor, dim: int, half_to_float: bool, *, out: torch.Tensor) -> torch.Tensor:
    if out.shape != x.shape:
        out.resize_(x.shape)
    return rk.softmax(x, dim % max(x.dim(), 1), out, log=True)
