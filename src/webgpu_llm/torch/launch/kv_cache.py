"""Launching the KV-cache append (kernels/kv_cache.py)."""

from __future__ import annotations

import struct

import torch

from ...kernels.kv_cache import KvAppendSpec, kv_append_kernel
from ...kernels.strided import grid_1d
from ..context import ctx
from ..dtypes import name_of
from .common import binding, compiled


def _geom(t: torch.Tensor | None) -> list[int]:
    if t is None:
        return [0] * 5
    return [t.storage_offset(), *[0 if t.shape[d] == 1 else t.stride(d) for d in range(4)]]


def kv_append(kc: torch.Tensor, vc: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor,
              start: bool, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None) -> None:
    """kc[:, :, p_i] = rope(k)[:, :, i]; vc[:, :, p_i] = v[:, :, i] with p_i = index[i] (or index + i)."""
    b, hk, n, d = k.shape
    if k.numel() == 0:
        return
    spec = KvAppendSpec(name_of(k.dtype), name_of(v.dtype), name_of(kc.dtype), name_of(index.dtype),
                        name_of(cos.dtype) if cos is not None else None, start)
    kernel = compiled(("kv_append", spec), lambda: kv_append_kernel(spec))
    cos4 = cos.expand(b, 1, n, d) if cos is not None else None
    sin4 = sin.expand(b, 1, n, d) if sin is not None else None
    words = [b, hk, n, d, index.storage_offset(), index.stride(0) if index.dim() else 0,
             *_geom(k), *_geom(v), *_geom(kc), *_geom(vc), *_geom(cos4), *_geom(sin4)]
    binds = [binding(kc), binding(vc), binding(k), binding(v), binding(index)]
    if cos is not None and sin is not None:
        binds += [binding(cos), binding(sin)]
    ctx().stream.launch(kernel, binds, struct.pack(f"<{len(words)}I", *words), grid_1d(k.numel()))
