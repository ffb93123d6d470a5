"""Launching the fused linear layers (kernels/fused_linear.py) for the compiler's fused ops and
nn.Linear: one row of x goes to the mat-vec with its ends fused (a Qwen2 layer's linear algebra
is then four launches); other shapes go through the general matmul, RMSNorm and pointwise
kernels.

The output projection after a split-key attention can take x as the attention's partials
(`Merged`): it merges them as it stages x, and writes the new token into the KV caches, so
the attention's own merge launch is not needed.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ...kernels.dtypes import vec4_elems
from ...kernels.fused_linear import EARLY, MAX_K, MatvecSpec, default_shape, matvec_kernel
from ...kernels.pointwise import Pointwise
from ...kernels.strided import grid_rows
from ..context import ctx
from ..dtypes import dtype_of, name_of
from ..tensors import empty
from . import elementwise as ew
from .common import binding, compiled
from .matmul import matmul
from .rms_norm import rms_norm
from .settings import settings

_ADD = Pointwise("add", "a0 + a1", "f32", "f32")
_SILU_MUL = Pointwise("silu_mul", "a0 / (1.0 + exp(-a0)) * a1", "f32", "f32")


@dataclass(frozen=True)
class Norm:
    """An RMSNorm applied to x before the product: rms_norm(x) * w."""

    w: torch.Tensor
    eps: float


@dataclass(frozen=True)
class Merged:
    """x given as one query row's attention partials (attention.partials, keys split in `ns`)
    and the new token to write into the caches: `tensors` = (k cache, v cache, new key, new
    value, position[, cos, sin]), `params` the attention launch's parameter block."""

    part: torch.Tensor
    params: bytes
    ns: int
    heads: int
    dv: int
    d: int
    dtype: torch.dtype  # the attention output's (x is rounded to it)
    tensors: tuple[torch.Tensor, ...]

    @property
    def k(self) -> int:
        return self.heads * self.dv


def matvec_shape(n: int, k: int, gated: bool = False) -> tuple[int, int]:
    """(threads per workgroup, output columns per workgroup) of a mat-vec with n columns of k
    inputs: the device's settings (`matvec_shapes`), else the kernel's defaults."""
    return settings().matvec_shapes.get((n, k)) or default_shape(n, k, gated)


def _weights_fit(k: int, weights: Sequence[torch.Tensor], staged: bool = True) -> bool:
    """k-contiguous weights of one dtype that 16-byte loads can read, for an x of k values
    (which fits in workgroup memory where it is staged)."""
    if staged and k > MAX_K:
        return False
    for w in weights:
        u = vec4_elems(dtype_of(w.dtype))
        if (w.dim() != 2 or w.stride(1) != 1 or k % u or w.stride(0) % u or w.storage_offset() % u
                or w.dtype != weights[0].dtype):
            return False
    return True


def _direct(x: torch.Tensor, w: torch.Tensor, norm: Norm | None) -> bool:
    """Does the mat-vec read x in 16-byte units beside the weights (not staged: any length)?"""
    return norm is None and x.dtype == w.dtype and x.storage_offset() % vec4_elems(dtype_of(w.dtype)) == 0


def _fast(x: torch.Tensor, weights: Sequence[torch.Tensor], norm: Norm | None) -> bool:
    """One contiguous row of x, and weights the mat-vec reads (`_weights_fit`)."""
    k = x.shape[-1]
    return (x.numel() == k and x.is_contiguous() and x.dtype.is_floating_point
            and _weights_fit(k, weights, not _direct(x, weights[0], norm)))


def _ends_fit(y: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None) -> bool:
    """A contiguous output, and a bias and a residual the mat-vec's store adds."""
    res_ok = residual is None or (residual.is_contiguous() and residual.shape == y.shape)
    return res_ok and _vector(bias) and y.is_contiguous()


def _matvec(ys: Sequence[torch.Tensor], x: torch.Tensor | Merged, ws: Sequence[torch.Tensor],
            biases: Sequence[torch.Tensor | None], gate: torch.Tensor | None = None,
            residual: torch.Tensor | None = None, norm: Norm | None = None) -> None:
    merged = x if isinstance(x, Merged) else None
    k = merged.k if merged else x.shape[-1]
    u = vec4_elems(dtype_of(ws[0].dtype))
    n_total = sum(w.shape[0] for w in ws)
    wg, cols = matvec_shape(n_total, k, gate is not None)
    direct = not merged and _direct(x, ws[0], norm)
    merge = None
    if merged:
        kc, vc, kn, vn, ix = (name_of(t.dtype) for t in merged.tensors[:5])
        rope = name_of(merged.tensors[5].dtype) if len(merged.tensors) > 5 else None
        merge = (merged.ns, merged.dv, merged.d, (kc, vc, kn, vn, ix, rope))
    spec = MatvecSpec(name_of(x.dtype), name_of(ws[0].dtype), tuple(name_of(y.dtype) for y in ys),
                      tuple(name_of(b.dtype) if b is not None else None for b in biases),
                      name_of(residual.dtype) if residual is not None else None, gate is not None,
                      name_of(norm.w.dtype) if norm is not None else None, name_of(x.dtype) if norm is not None else None,
                      cols, k, ctx().gpu.subgroups_wgsl(), direct=direct, wg=wg, merge=merge,
                      early=EARLY if not direct and (norm is not None or merged is not None) else 0)
    kernel = compiled(("matvec", spec), lambda: matvec_kernel(spec))
    eps = struct.unpack("<I", struct.pack("<f", norm.eps if norm is not None else 0.0))[0]
    x_at = 0 if merged else x.storage_offset() // u if direct else x.storage_offset()
    words = [k, n_total, x_at, norm.w.storage_offset() if norm is not None else 0, eps]
    first = 0
    for w, b, y in zip(ws, biases, ys):
        words += [first, w.storage_offset() // u, w.stride(0) // u, b.storage_offset() if b is not None else 0,
                  y.storage_offset()]
        first += w.shape[0]
    words += [residual.storage_offset() if residual is not None else 0,
              gate.storage_offset() // u if gate is not None else 0, gate.stride(0) // u if gate is not None else 0]
    binds = [binding(y) for y in ys] + [binding(merged.part if merged else x)] + [binding(w) for w in ws]
    binds += [binding(t) for t in (gate, *biases, residual, norm.w if norm is not None else None) if t is not None]
    params = struct.pack(f"<{len(words)}I", *words)
    if merged:
        binds += [binding(t) for t in merged.tensors]
        params += merged.params
    ctx().stream.launch(kernel, binds, params, grid_rows(-(-n_total // spec.cols)))


def merged_linear_ok(k: int, w: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
                     y: torch.Tensor) -> bool:
    """Can `merged_linear` run this (one row of k inputs, weights that 16-byte loads read)?"""
    return _weights_fit(k, [w]) and w.shape[1] == k and y.numel() == w.shape[0] and _ends_fit(y, bias, residual)


def merged_linear(y: torch.Tensor, x: Merged, w: torch.Tensor, bias: torch.Tensor | None = None,
                  residual: torch.Tensor | None = None) -> torch.Tensor:
    """y = merge(x) @ w.T (+ bias) (+ residual), merge(x) the attention output whose partials x
    holds, and the new token written into the caches (see merged_linear_ok)."""
    _matvec([y], x, [w], [bias], residual=residual)
    return y


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def _normed(x: torch.Tensor, norm: Norm | None) -> torch.Tensor:
    if norm is None:
        return x
    return rms_norm(empty(x.shape, torch.promote_types(x.dtype, norm.w.dtype)), x, norm.w, norm.eps)


def _vector(t: torch.Tensor | None) -> bool:
    return t is None or (t.dim() == 1 and t.stride(0) == 1)


def linear(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
           residual: torch.Tensor | None = None, norm: Norm | None = None) -> torch.Tensor:
    """y = norm(x) @ w.T (+ bias) (+ residual); y has x's leading shape and w.shape[0] columns."""
    if _fast(x, [w], norm) and _ends_fit(y, bias, residual):
        _matvec([y], x, [w], [bias], residual=residual, norm=norm)
        return y
    x = _normed(x, norm)
    y3 = _rows(y).unsqueeze(0)
    c = None
    if bias is not None:
        c = bias.expand(y3.shape)
    elif residual is not None:
        c = _rows(residual.expand(y.shape)).unsqueeze(0)
    matmul(y3, _rows(x).unsqueeze(0), w.t().unsqueeze(0), c)
    if bias is not None and residual is not None:
        ew.run(_ADD, y, [y, residual])
    return y


def linear_group(ys: Sequence[torch.Tensor], x: torch.Tensor, ws: Sequence[torch.Tensor],
                 biases: Sequence[torch.Tensor | None], norm: Norm | None = None) -> None:
    """ys[i] = norm(x) @ ws[i].T (+ biases[i]): several projections of one input, one launch."""
    if _fast(x, ws, norm) and all(_vector(b) for b in biases) and all(y.is_contiguous() for y in ys):
        _matvec(ys, x, ws, biases, norm=norm)
        return
    xn = _normed(x, norm)
    for y, w, b in zip(ys, ws, biases):
        linear(y, xn, w, b)


def gated_linear(y: torch.Tensor, x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
                 norm: Norm | None = None) -> torch.Tensor:
    """y = silu(norm(x) @ w_gate.T) * (norm(x) @ w_up.T)."""
    if _fast(x, [w_up, w_gate], norm) and y.is_contiguous():
        _matvec([y], x, [w_up], [None], gate=w_gate, norm=norm)
        return y
    x = _normed(x, norm)
    g = empty(y.shape, y.dtype)
    linear(g, x, w_gate)
    linear(y, x, w_up)
    ew.run(_SILU_MUL, y, [g, y])
    return y
