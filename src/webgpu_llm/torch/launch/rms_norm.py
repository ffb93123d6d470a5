"""Launching RMSNorm (kernels/rows.py, `rms_norm_kernel`) over torch tensors."""

from __future__ import annotations

import struct

import torch

from ...kernels.rows import RmsNormSpec, rms_norm_kernel
from ...kernels.strided import grid_rows
from ..context import ctx
from ..dtypes import name_of
from .common import binding, collapse, compiled


def rms_norm(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None, h: torch.Tensor | None = None) -> torch.Tensor:
    """y = rmsnorm(x (+ residual)) * w over the last dimension; h receives x + residual."""
    d = x.shape[-1]
    rows = x.numel() // d if d else 0
    if rows == 0:
        return y
    lead = list(x.shape[:-1]) or [1]
    tensors = [y, x] + ([residual, h] if residual is not None else [])
    strides = [list(t.stride()[:-1]) or [0] for t in tensors]
    shape, cstrides = collapse(lead, strides)
    rank = len(shape)
    words = [rows, d, struct.unpack("<I", struct.pack("<f", eps))[0]]
    for t, st in zip(tensors, cstrides):
        words += [t.storage_offset(), *st, t.stride(-1)]
    if residual is None:
        words += [0] * (2 * (rank + 2))
    words += [w.storage_offset(), w.stride(-1), *shape]
    spec = RmsNormSpec(name_of(x.dtype), name_of(w.dtype), name_of(y.dtype), rank, residual is not None)
    kernel = compiled(("rms_norm", spec), lambda: rms_norm_kernel(spec))
    binds = [binding(y), binding(x), binding(w)]
    if residual is not None:
        binds += [binding(residual), binding(h)]
    ctx().stream.launch(kernel, binds, struct.pack(f"<{len(words)}I", *words), grid_rows(rows))
    return y
