"""Launching attention (kernels/sdpa.py) over torch tensors: the attention launch, the merge of
its key splits, and the check that the two can append the new token to a static cache."""

from __future__ import annotations

import struct

import torch

from ...kernels.sdpa import MAX_D, MergeSpec, SdpaSpec, merge_kernel, sdpa_kernel, splits
from ...kernels.strided import grid_rows
from ..context import ctx
from ..dtypes import dtype_of, name_of
from ..tensors import empty
from .common import binding, compiled


def _geom(t: torch.Tensor) -> list[int]:
    """offset and the 4 strides, with 0 where a dimension of size 1 broadcasts."""
    return [t.storage_offset(), *[0 if t.shape[d] == 1 else t.stride(d) for d in range(4)]]


def can_append(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
               index: torch.Tensor) -> bool:
    """Can `attention(..., append=(k_new, v_new, index))` write the new token itself? One query
    row and one new token per head, keys split over workgroups (the merge writes the caches),
    caches whose rows start on a word (16-bit elements are written in pairs) with unit element
    strides, and a 32-bit or 64-bit position."""
    if q.shape[2] != 1 or k_new.shape[2] != 1 or v_new.shape[2] != 1 or index.numel() != 1:
        return False
    if splits(q.shape[0] * q.shape[1], k.shape[2])[0] < 2:  # the merge launch writes the cache
        return False
    for c in (k, v):
        per = dtype_of(c.dtype).per_word
        if c.stride(3) != 1 or per > 2 or c.shape[3] % per or any(x % per for x in (c.storage_offset(), *c.stride()[:3])):
            return False
    return index.dtype in (torch.int32, torch.int64) and k_new.shape[:2] == k.shape[:2] == v.shape[:2]


def attention(y: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              causal: bool, scale: float, cos: torch.Tensor | None = None,
              sin: torch.Tensor | None = None,
              append: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """y[b,h,i] = softmax(scale * q[b,h,i] . k[b,kh]^T + mask) @ v[b,kh] for 4-d operands, with
    kh = h * Hk / H; q is first rotated by cos/sin (broadcasting to q's shape) if given.

    `append` = (k_new, v_new, index): first k[:, :, p] = rope(k_new), v[:, :, p] = v_new with
    p = index (one token; see can_append), k_new rotated by the same cos/sin as q."""
    if y.numel() == 0:
        return y
    split = partials(y, q, k, v, mask, causal, scale, cos, sin, append)
    if split is not None:
        part, params = split
        d, dv = q.shape[3], v.shape[3]
        merge_binds = [binding(y), binding(part)]
        app = None
        if append is not None:
            kn, vn, ix = append
            app = (name_of(k.dtype), name_of(v.dtype), name_of(kn.dtype), name_of(vn.dtype), name_of(ix.dtype),
                   name_of(cos.dtype) if cos is not None else None)
            merge_binds += [binding(t) for t in (k, v, *append, cos, sin) if t is not None]
        spec = MergeSpec(name_of(y.dtype), dv, app, d)
        merge = compiled(("sdpa_merge", spec), lambda: merge_kernel(spec))
        ctx().stream.launch(merge, merge_binds, params, grid_rows(q.shape[0] * q.shape[1] * q.shape[2]))
    return y


def partials(y: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
             causal: bool, scale: float, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None,
             append: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
             ) -> tuple[torch.Tensor, bytes] | None:
    """The attention launch of `attention`: where the keys are split, it writes each split's
    partials (for `merged_wgsl`) and returns them with the launch's parameter block (which the
    merging launch reads too); otherwise it writes y and returns None."""
    b, h, lq, d = q.shape
    hk, lk, dv = k.shape[1], k.shape[2], v.shape[3]
    if d > MAX_D or dv > MAX_D:
        raise NotImplementedError(f"attention head size {max(d, dv)} over {MAX_D}")
    rows = b * h * lq
    ns, span = splits(rows, lk)
    words = [b, h, lq, lk, d, dv, hk, int(causal), *_geom(q), *_geom(k), *_geom(v), *_geom(y)]
    words += _geom(mask.expand(b, h, lq, lk)) if mask is not None else [0] * 5
    split = ns > 1
    new = None
    if append is not None:
        new = (name_of(append[0].dtype), name_of(append[1].dtype), name_of(append[2].dtype))
    spec = SdpaSpec(name_of(q.dtype), name_of(k.dtype), name_of(v.dtype), name_of(y.dtype),
                    name_of(mask.dtype) if mask is not None else None, name_of(cos.dtype) if cos is not None else None,
                    d, dv, split, new, ctx().gpu.subgroups_wgsl())
    kernel = compiled(("sdpa", spec), lambda: sdpa_kernel(spec))
    part = empty([rows * ns * (dv + 2)], torch.float32) if split else None
    binds = [binding(part if part is not None else y), binding(q), binding(k), binding(v)]
    binds += [binding(mask)] if mask is not None else []
    rope_words: list[int] = []
    if cos is not None and sin is not None:
        binds += [binding(cos), binding(sin)]
        rope_words = _geom(cos.expand(b, h, lq, d)) + _geom(sin.expand(b, h, lq, d))
    if append is not None:
        k_new, v_new, index = append
        binds += [binding(k_new), binding(v_new), binding(index)]
        if not split:
            raise ValueError("attention: appending a token needs split keys (see can_append)")
        rope_words = (rope_words or [0] * 10) + _geom(k_new) + _geom(v_new) + [index.storage_offset()]
    params = struct.pack(f"<{len(words)}I", *words) + struct.pack("<f", scale) + struct.pack("<2I", ns, span)
    params += struct.pack(f"<{len(rope_words)}I", *rope_words)
    ctx().stream.launch(kernel, binds, params, grid_rows(rows * ns))
    return (part, params) if part is not None else None
