"""Argument binding and result dtypes for Python kernels, computed once per signature."""

from __future__ import annotations

from typing import Any

import torch

_binders: dict[Any, tuple[list[str], list[Any]]] = {}
_kwarg_only: dict[Any, int] = {}


def split(op: torch._ops.OpOverload, vals: list[Any]) -> tuple[list[Any], dict[str, Any]]:
    """Bound arguments back to (positional, keyword-only) for calling `op`."""
    first = _kwarg_only.get(op)
    if first is None:
        sch = op._schema.arguments
        first = next((i for i, a in enumerate(sch) if a.kwarg_only), len(sch))
        _kwarg_only[op] = first
    names = [a.name for a in op._schema.arguments]
    return vals[:first], dict(zip(names[first:], vals[first:]))


def bind(op: torch._ops.OpOverload, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """All arguments of `op` in schema order, defaults filled in."""
    b = _binders.get(op)
    if b is None:
        sch = op._schema.arguments
        b = ([a.name for a in sch], [a.default_value if a.has_default_value() else None for a in sch])
        _binders[op] = b
    names, defaults = b
    vals = list(args)
    for i in range(len(args), len(names)):
        vals.append(kwargs.get(names[i], defaults[i]))
    return vals


_dtypes: dict[Any, torch.dtype] = {}


def _describe(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return (a.dtype, a.dim() == 0, a.device.type == "cpu" and a.dim() == 0)
    if isinstance(a, (bool, int, float)):
        return type(a)
    if isinstance(a, (list, tuple)):
        return tuple(_describe(x) for x in a)
    return a


def _meta(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        return torch.empty(() if a.dim() == 0 else (1,), dtype=a.dtype, device="meta")
    if isinstance(a, bool):
        return a
    if isinstance(a, int):
        return 1
    if isinstance(a, float):
        return 1.0
    if isinstance(a, (list, tuple)):
        return type(a)(_meta(x) for x in a)
    return a


def result_dtype(op: torch._ops.OpOverload, args: list[Any]) -> torch.dtype:
    """The dtype torch gives op(*args) (type promotion), from a cached run on meta tensors."""
    key = (op, tuple(_describe(a) for a in args))
    dt = _dtypes.get(key)
    if dt is None:
        pos, kw = split(op, [_meta(a) for a in args])
        res = op(*pos, **kw)
        dt = (res[0] if isinstance(res, (tuple, list)) else res).dtype
        _dtypes[key] = dt
    return dt
