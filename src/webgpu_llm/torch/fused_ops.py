"""Fused ops (namespace `webgpu`) that the compiler's passes put in place of ATen patterns.

They are ordinary torch ops with a webgpu kernel and a Meta kernel (for shape propagation), so
a rewritten graph still runs, and is recorded, like any other graph.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .kernels.fused_linear import gated_linear as gated_linear_kernel
from .kernels.fused_linear import linear as linear_kernel
from .kernels.rms_norm import rms_norm as rms_norm_kernel
from .kernels.rope import rope as rope_kernel
from .tensors import empty

_LIB = torch.library.Library("webgpu", "DEF")
SCHEMAS = {
    "rms_norm": "rms_norm(Tensor x, Tensor w, float eps) -> Tensor",
    "add_rms_norm": "add_rms_norm(Tensor x, Tensor residual, Tensor w, float eps) -> (Tensor, Tensor)",
    "rope": "rope(Tensor x, Tensor cos, Tensor sin) -> Tensor",
    "linear": "linear(Tensor x, Tensor w, Tensor? bias=None, Tensor? residual=None) -> Tensor",
    "gated_linear": "gated_linear(Tensor x, Tensor w_gate, Tensor w_up) -> Tensor",
}
for _schema in SCHEMAS.values():
    _LIB.define(_schema)

ops = torch.ops.webgpu


def _register(name: str, meta: Callable[..., Any], device: Callable[..., Any]) -> None:
    _LIB.impl(name, meta, "Meta")
    _LIB.impl(name, device, "PrivateUse1")


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


# -- linear layers ----------------------------------------------------------------------------
def _linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
            residual: torch.Tensor | None = None) -> torch.Tensor:
    y = _like([*x.shape[:-1], w.shape[0]], x.dtype, x.device)
    return y if x.device.type == "meta" else linear_kernel(y, x, w, bias, residual)


def _gated_linear(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor) -> torch.Tensor:
    y = _like([*x.shape[:-1], w_gate.shape[0]], x.dtype, x.device)
    return y if x.device.type == "meta" else gated_linear_kernel(y, x, w_gate, w_up)


for _name, _fn in [("rms_norm", _rms_norm), ("add_rms_norm", _add_rms_norm), ("rope", _rope),
                   ("linear", _linear), ("gated_linear", _gated_linear)]:
    _register(_name, _fn, _fn)
