"""Tensors on the webgpu device: creation, views, and where their bytes live.

A device tensor is a plain `torch.Tensor` whose sizes, strides and storage offset torch keeps
as usual; its storage has no host memory, and its Python storage object carries the GPU
`Allocation` (attribute `_wg`). Views share the storage, so they share the buffer.

Metadata-only work (views, restriding, growing a storage's byte count) is delegated to the
Meta kernels: they treat data pointers as opaque, which is exactly what a device without
host-visible memory needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .context import ctx
from .dtypes import dtype_of
from .memory import Allocation, Block

aten = torch.ops.aten
META = torch._C.DispatchKeySet(torch._C.DispatchKey.Meta)
_set_storage = aten.set_.source_Storage_storage_offset
_create = torch._C._acc.create_empty_tensor


def contiguous_strides(size: Sequence[int]) -> list[int]:
    strides = [1] * len(size)
    acc = 1
    for i in range(len(size) - 1, -1, -1):
        strides[i] = acc
        acc *= max(int(size[i]), 1)
    return strides


def storage_nbytes(size: Sequence[int], stride: Sequence[int], itemsize: int, offset: int = 0) -> int:
    if any(s == 0 for s in size):
        return 0
    return (offset + 1 + sum((s - 1) * st for s, st in zip(size, stride))) * itemsize


# Called with each tensor `empty` creates (see ops/plans.py, which records an op's allocations).
ALLOC_OBSERVERS: list[Callable[[torch.Tensor], None]] = []


def empty(size: Sequence[int], dtype: torch.dtype, stride: Sequence[int] | None = None) -> torch.Tensor:
    """A new device tensor with fresh (uninitialised) GPU memory."""
    dtype_of(dtype)  # refuses dtypes the kernels cannot address
    if stride is None:
        # Contiguous: skip setting the storage's byte count (a Meta set_, a third of the cost);
        # nothing on this device reads it, and views are made by the Meta kernels regardless.
        t = _create(size, dtype)
        t.untyped_storage()._wg = ctx().pool.alloc(t.numel() * t.element_size())
    else:
        t = _create([0], dtype)
        st = t.untyped_storage()
        set_geometry(t, st, [int(s) for s in size], [int(s) for s in stride])
        st._wg = ctx().pool.alloc(st.nbytes())
    for obs in ALLOC_OBSERVERS:
        obs(t)
    return t


def set_geometry(t: torch.Tensor, storage: torch.UntypedStorage, size: Sequence[int],
                 stride: Sequence[int], offset: int = 0) -> torch.Tensor:
    """Point `t` at `storage` with the given geometry (metadata only; grows the byte count)."""
    _set_storage.redispatch(META, t, storage, offset, list(size), list(stride))
    return t


def restride(base: torch.Tensor, size: Sequence[int], stride: Sequence[int], offset: int) -> torch.Tensor:
    """A view of `base`'s storage with the given geometry (no autograd view tracking)."""
    return set_geometry(_create([0], base.dtype), base.untyped_storage(), size, stride, offset)


def allocation(t: torch.Tensor) -> Allocation:
    try:
        return t.untyped_storage()._wg
    except AttributeError:
        raise RuntimeError("a webgpu tensor without GPU memory (was it created outside webgpu_llm?)") from None


def block(t: torch.Tensor) -> Block:
    return allocation(t).block

