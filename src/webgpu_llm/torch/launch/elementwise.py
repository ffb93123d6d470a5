"""Launching pointwise kernels (kernels/pointwise.py): copies, dtype conversions, arithmetic,
RoPE, and the many-tensor add of a static KV cache's length counters."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...kernels.pointwise import AddManySpec, Pointwise, add_many_kernel, pointwise_body, rope_body
from ...kernels.strided import grid_1d
from ..context import ctx
from ..dtypes import dtype_of, name_of
from . import mapping
from .common import binding, broadcast_strides, collapse, compiled, pack


def run(op: Pointwise, out: torch.Tensor, inputs: Sequence[torch.Tensor], scalars: Sequence[float] = ()) -> None:
    """out[...] = op(inputs broadcast to out.shape, scalars)."""
    if out.numel() == 0:
        return
    shape = list(out.shape)
    strides = [list(out.stride())] + [broadcast_strides(t, shape) for t in inputs]
    cshape, cstrides = collapse(shape, strides)
    words: list[int] = []
    for t, st in zip(inputs, cstrides[1:]):
        words.append(t.storage_offset())
        words.extend(st)
    value = dtype_of(out.dtype).convert(f"({op.expr})", op.result)
    n_in, n_sc = len(inputs), len(scalars)
    mapping.launch(("pw", op.expr, op.kind, op.result, n_sc), op.name, out, cshape, cstrides[0], inputs,
                   [op.kind] * n_in, lambda r: pointwise_body(op, n_in, n_sc, value, r), pack(words, scalars, op.kind))


COPY = Pointwise("copy", "a0", "f32", "f32")
COPY_INT = Pointwise("copy", "a0", "i32", "i32")


def copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    """dst[...] = src (broadcast), converting dtypes on the GPU."""
    floats = "f32" in (dtype_of(src.dtype).kind, dtype_of(dst.dtype).kind)
    run(COPY if floats else COPY_INT, dst, [src])


def rope(y: torch.Tensor, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """y = x * cos + rotate_half(x) * sin over the last dimension (cos and sin broadcast)."""
    shape = list(y.shape)
    xs, cs, ss = (broadcast_strides(t, shape) for t in (x, cos, sin))
    half = shape[-1] // 2
    words = [x.storage_offset(), *xs, cos.storage_offset(), *cs, sin.storage_offset(), *ss]
    mapping.launch(("rope", half), "rope", y, shape, list(y.stride()), [x, cos, sin], ["f32"] * 3,
                   lambda r: rope_body(r, half), pack(words))
    return y


MAX_ADD_MANY = 32  # tensors per launch at most (one kernel per count: keep the variants few)


def add_many_(tensors: Sequence[torch.Tensor], value: float) -> None:
    """t += value for every tensor, as many per launch as the adapter has storage bindings for
    (the length counters of a static KV cache, one per layer, advance in one launch, not one each).

    The tensors must be contiguous webgpu tensors of one 32- or 64-bit dtype.
    """
    d = dtype_of(tensors[0].dtype)
    c = ctx()
    per = max(1, min(MAX_ADD_MANY, int(c.gpu.limits.get("max-storage-buffers-per-shader-stage", 8)) - 1))
    for lo in range(0, len(tensors), per):
        group = tensors[lo:lo + per]
        spec = AddManySpec(name_of(tensors[0].dtype), len(group))
        kernel = compiled(("add_many", spec), lambda spec=spec: add_many_kernel(spec))
        words = [w for t in group for w in (t.storage_offset(), t.numel())]
        c.stream.launch(kernel, [binding(t) for t in group], pack(words, [value], d.kind),
                        grid_1d(max(t.numel() for t in group)))
