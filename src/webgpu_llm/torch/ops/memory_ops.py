"""Allocation, views, copies and host transfers: the ops every other op stands on."""

from __future__ import annotations

import functools
from typing import Any

import torch

from ..launch import elementwise as ew
from ..tensors import META, contiguous_strides, empty, set_geometry, storage_nbytes
from ..transfer import download, upload_into
from .registry import impl, register

aten = torch.ops.aten


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None else torch.get_default_dtype()


@impl("empty.memory_format", plan=False)
def _empty(size: list[int], dtype: torch.dtype | None = None, layout: Any = None, device: Any = None,
           pin_memory: bool | None = None, memory_format: Any = None) -> torch.Tensor:
    if memory_format in (None, torch.contiguous_format, torch.preserve_format):
        return empty(size, _dtype(dtype))
    # channels_last and the like: the strides the format means, worked out on the meta device
    return empty(size, _dtype(dtype), torch.empty(size, device="meta", memory_format=memory_format).stride())


@impl("empty_strided", plan=False)
def _empty_strided(size: list[int], stride: list[int], dtype: torch.dtype | None = None, layout: Any = None,
                   device: Any = None, pin_memory: bool | None = None) -> torch.Tensor:
    return empty(size, _dtype(dtype), stride)


# Views only change metadata: the Meta kernels build them over the same storage. The kernel
# registered is the op's native redispatch itself (a view is ~1 µs cheaper with no Python frame).
for _name, _op in [("view", aten.view.default), ("as_strided", aten.as_strided.default),
                   ("_reshape_alias", aten._reshape_alias.default), ("unfold", aten.unfold.default),
                   ("view.dtype", aten.view.dtype)]:
    register(_name, functools.partial(_op._handle.redispatch_boxed, META), plan=False)


@impl("resize_", plan=False)
def _resize(self: torch.Tensor, size: list[int], memory_format: Any = None) -> torch.Tensor:
    stride = contiguous_strides(size)
    need = storage_nbytes(size, stride, self.element_size(), self.storage_offset())
    if need <= self.untyped_storage().nbytes():
        set_geometry(self, self.untyped_storage(), size, stride, self.storage_offset())
    else:  # a bigger storage: the old contents are not kept (out= results overwrite them)
        fresh = empty(size, self.dtype)
        set_geometry(self, fresh.untyped_storage(), size, stride)
    return self


@impl("_copy_from")
def _copy_from(src: torch.Tensor, dst: torch.Tensor, non_blocking: bool = False) -> torch.Tensor:
    if src.device.type == "webgpu" and dst.device.type == "webgpu":
        ew.copy_into(dst, src)
    elif dst.device.type == "webgpu":
        upload_into(dst, src)
    else:
        dst.copy_(download(src))
    return dst


@impl("_to_copy")
def _to_copy(self: torch.Tensor, *, dtype: torch.dtype | None = None, layout: Any = None, device: Any = None,
             pin_memory: bool | None = None, non_blocking: bool = False, memory_format: Any = None) -> torch.Tensor:
    """`.to(dtype)` / `.to("cpu")` in one op: the composite form is an empty_strided plus a copy_,
    two trips through the dispatcher (RMSNorm in f16 models converts twice per norm)."""
    dt = dtype if dtype is not None else self.dtype
    if device is not None and torch.device(device).type != "webgpu":
        return download(self).to(device=device, dtype=dt)
    fmt = memory_format or torch.preserve_format
    if fmt == torch.contiguous_format or (fmt == torch.preserve_format and self.is_contiguous()):
        out = empty(self.shape, dt)
    else:  # the layout the format asks for, as the composite would (preserve keeps the strides)
        out = torch.empty_like(self, dtype=dt, device="webgpu", memory_format=fmt)
    return _copy_from(self, out)  # self may be a host tensor (dispatched here by the device argument)


@impl("_copy_from_and_resize")
def _copy_from_and_resize(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    if tuple(dst.shape) != tuple(src.shape):
        dst.resize_(src.shape)
    return _copy_from(src, dst)


@impl("_local_scalar_dense", plan=False)
def _local_scalar_dense(self: torch.Tensor) -> bool | int | float:
    return download(self).item()


_FILL_F = ew.Pointwise("fill", "s0", "f32", "f32")
_FILL_I = ew.Pointwise("fill", "s0", "i32", "i32")


def fill(t: torch.Tensor, value: float) -> torch.Tensor:
    if t.dtype.is_floating_point:
        ew.run(_FILL_F, t, [], [float(value)])
    else:
        ew.run(_FILL_I, t, [], [int(value)])
    return t


@impl("fill_.Scalar")
def _fill_scalar(self: torch.Tensor, value: Any) -> torch.Tensor:
    return fill(self, value)


@impl("fill_.Tensor")
def _fill_tensor(self: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    if value.device.type == "webgpu":
        ew.copy_into(self, value)
        return self
    return fill(self, value.item())


@impl("zero_")
def _zero(self: torch.Tensor) -> torch.Tensor:
    return fill(self, 0)
