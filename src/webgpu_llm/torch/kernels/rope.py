"""Rotary position embedding in one launch: y = x * cos + rotate_half(x) * sin.

rotate_half(x) = cat(-x[..., h:], x[..., :h]) pairs element d with d + h (d < h) and d - h,
so each output element reads two elements of x and one of cos and sin (which broadcast).
"""

from __future__ import annotations

import torch

from . import mapping
from .common import pack, strided_offset
from .elementwise import broadcast_strides


def rope(y: torch.Tensor, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    shape = list(y.shape)
    xs, cs, ss = (broadcast_strides(t, shape) for t in (x, cos, sin))
    half = shape[-1] // 2

    def body(r: int) -> str:
        b = mapping.extra_base(r)
        bx, bc, bs = b, b + r + 1, b + 2 * (r + 1)
        last = f"P[{bx + r}u]"
        return "\n".join([
            f"  let d = c{r - 1};",
            f"  let xo = {strided_offset(bx, r)};",
            f"  let pd = select(d - {half}u, d + {half}u, d < {half}u);",
            f"  let xp = ld0(xo - d * {last} + pd * {last});",
            "  let rot = select(xp, -xp, d < " + f"{half}u);",
            f"  return Out(oy, ld0(xo) * ld1({strided_offset(bc, r)}) + rot * ld2({strided_offset(bs, r)}));",
        ])

    words = [x.storage_offset(), *xs, cos.storage_offset(), *cs, sin.storage_offset(), *ss]
    mapping.launch(("rope", half), "rope", y, shape, list(y.stride()), [x, cos, sin], ["f32"] * 3, body,
                   pack(words))
    return y
