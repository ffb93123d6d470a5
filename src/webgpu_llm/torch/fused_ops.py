"""Fused ops (namespace `webgpu`) that the compiler's passes put in place of ATen patterns.

They are ordinary torch ops with a webgpu kernel and a Meta kernel (for shape propagation), so
a rewritten graph still runs, and is recorded, like any other graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .launch.attention import attention as attention_kernel
from .launch.attention import can_append
from .launch.attention import partials as attention_partials
from .launch.elementwise import rope as rope_kernel
from .launch.fused_linear import Merged, Norm, merged_linear, merged_linear_ok
from .launch.fused_linear import gated_linear as gated_linear_kernel
from .launch.fused_linear import linear as linear_kernel
from .launch.fused_linear import linear_group as linear_group_kernel
from .launch.kv_cache import kv_append as kv_append_kernel
from .launch.rms_norm import rms_norm as rms_norm_kernel
from .ops.plans import planned
from .tensors import empty

_LIB = torch.library.Library("webgpu", "DEF")
SCHEMAS = {
    "rms_norm": "rms_norm(Tensor x, Tensor w, float eps) -> Tensor",
    "add_rms_norm": "add_rms_norm(Tensor x, Tensor residual, Tensor w, float eps) -> (Tensor, Tensor)",
    "rope": "rope(Tensor x, Tensor cos, Tensor sin) -> Tensor",
    "linear": "linear(Tensor x, Tensor w, Tensor? bias=None, Tensor? residual=None, Tensor? norm_w=None, "
              "float eps=0.0) -> Tensor",
    "linear_group": "linear_group(Tensor x, Tensor[] ws, Tensor?[] biases, Tensor? norm_w=None, float eps=0.0) "
                    "-> Tensor[]",
    "gated_linear": "gated_linear(Tensor x, Tensor w_gate, Tensor w_up, Tensor? norm_w=None, float eps=0.0) -> Tensor",
    "attention": "attention(Tensor q, Tensor k, Tensor v, Tensor? mask, float scale, bool causal, Tensor? cos=None, "
                 "Tensor? sin=None) -> Tensor",
    "kv_append": "kv_append(Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor k, Tensor v, Tensor index, bool start, "
                 "Tensor? cos=None, Tensor? sin=None) -> ()",
    "attention_append": "attention_append(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor? mask, float scale, "
                        "bool causal, Tensor? cos, Tensor? sin, Tensor k, Tensor v, Tensor index, bool start) -> Tensor",
    "attention_linear": "attention_linear(Tensor q, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor? mask, float scale, "
                        "bool causal, Tensor? cos, Tensor? sin, Tensor k, Tensor v, Tensor index, bool start, Tensor w, "
                        "Tensor? bias=None, Tensor? residual=None) -> Tensor",
}
for _schema in SCHEMAS.values():
    _LIB.define(_schema)

ops = torch.ops.webgpu


def _register(name: str, meta: Callable[..., Any], device: Callable[..., Any]) -> None:
    _LIB.impl(name, meta, "Meta")
    # through launch plans as the ATen ops: eager mode calls these once per layer (fuse_layers.py)
    _LIB.impl(name, planned(device), "PrivateUse1")


def _like(shape: list[int], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return empty(shape, dtype) if device.type == "webgpu" else torch.empty(shape, dtype=dtype, device=device)


# -- RMSNorm ----------------------------------------------------------------------------------
def _rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    y = _like(list(x.shape), torch.promote_types(x.dtype, w.dtype), x.device)
    return y if x.device.type == "meta" else rms_norm_kernel(y, x, w, eps)


def _add_rms_norm(x: torch.Tensor, r: torch.Tensor, w: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    shape = list(torch.broadcast_shapes(x.shape, r.shape))
    h = _like(shape, torch.promote_types(x.dtype, r.dtype), x.device)
    y = _like(shape, torch.promote_types(h.dtype, w.dtype), x.device)
    if x.device.type != "meta":
        rms_norm_kernel(y, x.expand(shape), w, eps, r.expand(shape), h)
    return y, h


# -- RoPE -------------------------------------------------------------------------------------
def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    shape = list(torch.broadcast_shapes(x.shape, cos.shape, sin.shape))
    y = _like(shape, torch.promote_types(x.dtype, cos.dtype), x.device)
    return y if x.device.type == "meta" else rope_kernel(y, x, cos, sin)


# -- linear layers (x may be RMS-normalised first) --------------------------------------------
def _norm(norm_w: torch.Tensor | None, eps: float) -> Norm | None:
    return Norm(norm_w, eps) if norm_w is not None else None


def _in_dtype(x: torch.Tensor, norm_w: torch.Tensor | None) -> torch.dtype:
    return torch.promote_types(x.dtype, norm_w.dtype) if norm_w is not None else x.dtype


def _linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
            residual: torch.Tensor | None = None, norm_w: torch.Tensor | None = None, eps: float = 0.0) -> torch.Tensor:
    y = _like([*x.shape[:-1], w.shape[0]], _in_dtype(x, norm_w), x.device)
    return y if x.device.type == "meta" else linear_kernel(y, x, w, bias, residual, _norm(norm_w, eps))


def _linear_group(x: torch.Tensor, ws: list[torch.Tensor], biases: list[torch.Tensor | None],
                  norm_w: torch.Tensor | None = None, eps: float = 0.0) -> list[torch.Tensor]:
    ys = [_like([*x.shape[:-1], w.shape[0]], _in_dtype(x, norm_w), x.device) for w in ws]
    if x.device.type != "meta":
        linear_group_kernel(ys, x, ws, biases, _norm(norm_w, eps))
    return ys


def _gated_linear(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, norm_w: torch.Tensor | None = None,
                  eps: float = 0.0) -> torch.Tensor:
    y = _like([*x.shape[:-1], w_gate.shape[0]], _in_dtype(x, norm_w), x.device)
    return y if x.device.type == "meta" else gated_linear_kernel(y, x, w_gate, w_up, _norm(norm_w, eps))


# -- attention and the KV cache --------------------------------------------------------------
def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float,
               causal: bool, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None) -> torch.Tensor:
    """Grouped-query attention (k and v have Hk heads, Hk dividing q's H) of a rotated q."""
    y = _like([*q.shape[:-1], v.shape[-1]], q.dtype, q.device)
    if q.device.type == "meta":
        return y
    return attention_kernel(y, q, k, v, mask, causal, scale, cos, sin)


def _kv_append(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor,
               start: bool, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None) -> None:
    if k.device.type != "meta":
        kv_append_kernel(k_cache, v_cache, k, v, index, start, cos, sin)


def _attention_append(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, mask: torch.Tensor | None,
                      scale: float, causal: bool, cos: torch.Tensor | None, sin: torch.Tensor | None, k: torch.Tensor,
                      v: torch.Tensor, index: torch.Tensor, start: bool) -> torch.Tensor:
    """kv_append(k_cache, v_cache, k, v, index, start, cos, sin), then attention(q, k_cache, v_cache, ...):
    one launch fewer where the attention can take the new token from k, v and its merge launch
    write it into the caches (decode with split keys, see can_append)."""
    y = _like([*q.shape[:-1], v_cache.shape[-1]], q.dtype, q.device)
    if q.device.type == "meta":
        return y
    if can_append(q, k_cache, v_cache, k, v, index):
        return attention_kernel(y, q, k_cache, v_cache, mask, causal, scale, cos, sin, append=(k, v, index))
    kv_append_kernel(k_cache, v_cache, k, v, index, start, cos, sin)
    return attention_kernel(y, q, k_cache, v_cache, mask, causal, scale, cos, sin)


def _attention_linear(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, mask: torch.Tensor | None,
                      scale: float, causal: bool, cos: torch.Tensor | None, sin: torch.Tensor | None, k: torch.Tensor,
                      v: torch.Tensor, index: torch.Tensor, start: bool, w: torch.Tensor, bias: torch.Tensor | None = None,
                      residual: torch.Tensor | None = None) -> torch.Tensor:
    """attention_append(...) with its heads side by side ([B, Lq, H * Dv]), then linear(., w, bias,
    residual): the attention's output projection. For one query row with split keys, the
    projection merges the splits as it reads its input and writes the new token into the
    caches (launch/fused_linear.py, `Merged`): the attention's merge launch is saved."""
    b, h, lq, d = q.shape
    dv = v_cache.shape[-1]
    y = _like([b, lq, w.shape[0]], q.dtype, q.device)
    if q.device.type == "meta":
        return y
    if b == 1 and lq == 1 and can_append(q, k_cache, v_cache, k, v, index) and merged_linear_ok(h * dv, w, bias,
                                                                                                 residual, y):
        att = torch.empty([b, h, lq, dv], dtype=q.dtype, device="meta")  # (its strides only: not written)
        part, params = attention_partials(att, q, k_cache, v_cache, mask, causal, scale, cos, sin, (k, v, index))
        tensors = tuple(t for t in (k_cache, v_cache, k, v, index, cos, sin) if t is not None)
        return merged_linear(y, Merged(part, params, part.numel() // (h * (dv + 2)), h, dv, d, q.dtype, tensors), w,
                             bias, residual)
    att = _attention_append(q, k_cache, v_cache, mask, scale, causal, cos, sin, k, v, index, start)
    return linear_kernel(y, att.transpose(1, 2).reshape(b, lq, h * dv), w, bias, residual)


for _name, _fn in [("attention", _attention), ("attention_linear", _attention_linear), ("kv_append", _kv_append), ("attention_append", _attention_append), ("rms_norm", _rms_norm), ("add_rms_norm", _add_rms_norm), ("rope", _rope),
                   ("linear", _linear), ("linear_group", _linear_group), ("gated_linear", _gated_linear)]:
    _register(_name, _fn, _fn)
