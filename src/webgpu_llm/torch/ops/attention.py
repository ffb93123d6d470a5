"""scaled_dot_product_attention, registered directly so it is not decomposed into matmuls."""

from __future__ import annotations

import math

import torch

from ..launch.attention import attention
from ..tensors import empty
from .registry import impl


@impl("scaled_dot_product_attention")
def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
          dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
          enable_gqa: bool = False) -> torch.Tensor:
    if dropout_p:
        raise NotImplementedError("webgpu: attention dropout is not supported (inference only)")
    lead = q.shape[:-2]
    q4, k4, v4 = (t.reshape(-1, *t.shape[-3:]) if t.dim() > 4 else t for t in (q, k, v))
    if q4.dim() == 3:
        q4, k4, v4 = q4.unsqueeze(0), k4.unsqueeze(0), v4.unsqueeze(0)
    mask = attn_mask
    if mask is not None:
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        if mask.dim() > 4:
            mask = mask.reshape(-1, *mask.shape[-3:])
    y = empty([*q4.shape[:-1], v4.shape[-1]], q.dtype)
    attention(y, q4, k4, v4, mask, is_causal, scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    return y.view([*lead, q.shape[-2], v.shape[-1]])
