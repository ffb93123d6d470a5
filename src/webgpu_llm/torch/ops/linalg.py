"""Matrix products: mm, bmm, addmm, baddbmm, linear."""

from __future__ import annotations

import torch

from ..launch import fused_linear
from ..launch.matmul import matmul
from ..tensors import empty
from .registry import impl


def _3d(t: torch.Tensor) -> torch.Tensor:
    return t.unsqueeze(0) if t.dim() == 2 else t


def _product(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None, alpha: float = 1.0,
             beta: float = 1.0, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b (+ c), for 2-d or 3-d a and b."""
    shape = [*a.shape[:-1], b.shape[-1]]
    if a.dim() == 3 and b.dim() == 3 and a.shape[0] != b.shape[0]:
        raise RuntimeError(f"bmm: batch sizes {a.shape[0]} and {b.shape[0]} differ")
    if out is None:
        out = empty(shape, a.dtype)
    elif list(out.shape) != shape:
        out.resize_(shape)
    if c is not None and beta == 0:
        c = None
    c3 = None if c is None else c.expand(shape)
    c3 = None if c3 is None else _3d(c3)
    matmul(_3d(out), _3d(a), _3d(b), c3, float(alpha), float(beta))
    return out


@impl("mm")
def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _product(a, b)


@impl("mm.out")
def _mm_out(a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    return _product(a, b, out=out)


@impl("bmm")
def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _product(a, b)


@impl("bmm.out")
def _bmm_out(a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor) -> torch.Tensor:
    return _product(a, b, out=out)


@impl("addmm")
def _addmm(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta: float = 1, alpha: float = 1) -> torch.Tensor:
    return _product(a, b, c, alpha, beta)


@impl("addmm.out")
def _addmm_out(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta: float = 1, alpha: float = 1,
               out: torch.Tensor) -> torch.Tensor:
    return _product(a, b, c, alpha, beta, out)


@impl("baddbmm")
def _baddbmm(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor, *, beta: float = 1,
             alpha: float = 1) -> torch.Tensor:
    return _product(a, b, c, alpha, beta)


@impl("linear")
def _linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ w.T + bias over any leading dimensions of x (nn.Linear): one row (decode) goes to the
    mat-vec that compiled graphs use, several to the tiled matmul."""
    return fused_linear.linear(empty([*x.shape[:-1], w.shape[0]], x.dtype), x, w, bias)
