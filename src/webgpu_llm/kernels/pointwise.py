"""Pointwise kernels over strided, broadcast operands of any dtype: map kernels
(kernels/mapping.py) whose element is an expression of the inputs at its coordinates.

One WGSL kernel per (expression, dtypes, rank): shapes, strides, offsets and scalars travel in
the parameter block, so a decode loop whose lengths change reuses the same pipelines. The
launcher first merges dimensions that are contiguous in every operand (most launches end up
rank 1 or 2), as torch's TensorIterator does.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.program import Kernel
from .common import Signature
from .dtypes import WGSL_DTYPE_HELPERS, dtype, element_store, loader
from .mapping import extra_base
from .strided import MAIN_ARGS, THREAD_ID, WG, strided_offset, words


@dataclass(frozen=True)
class Pointwise:
    """An expression over inputs a0..aN (values of `kind`) and scalars s0..sM (also `kind`)."""

    name: str
    expr: str
    kind: str  # compute type of the inputs and scalars: f32 | i32
    result: str  # type of the expression: f32 | i32


def pointwise_body(op: Pointwise, n_in: int, n_scalars: int, value: str, rank: int) -> str:
    """The map body of `op`: input k's geometry (offset, strides[rank]) and then the scalars
    follow the map's own parameter words; `value` is the expression converted to the output."""
    base = extra_base(rank)
    lines = []
    for k in range(n_in):
        b = base + k * (rank + 1)
        idx = " + ".join([f"P[{b}]"] + [f"c{d} * P[{b + 1 + d}]" for d in range(rank)])
        lines.append(f"  let a{k} = ld{k}({idx});")
    sc = base + n_in * (rank + 1)
    lines += [f"  let s{j} = bitcast<{op.kind}>(P[{sc + j}]);" for j in range(n_scalars)]
    lines.append(f"  return Out(oy, {value});")
    return "\n".join(lines)


def rope_body(rank: int, half: int) -> str:
    """The map body of y = x * cos + rotate_half(x) * sin (transformers' RoPE) over inputs x,
    cos, sin, each an offset and strides[rank] after the map's own words. rotate_half(x) =
    cat(-x[..., h:], x[..., :h]) pairs element d with d + h (d < h) and d - h, so each output
    element reads two elements of x and one of cos and sin (which broadcast)."""
    b = extra_base(rank)
    bx, bc, bs = b, b + rank + 1, b + 2 * (rank + 1)
    last = f"P[{bx + rank}u]"
    return "\n".join([
        f"  let d = c{rank - 1};",
        f"  let xo = {strided_offset(bx, rank)};",
        f"  let pd = select(d - {half}u, d + {half}u, d < {half}u);",
        f"  let xp = ld0(xo - d * {last} + pd * {last});",
        "  let rot = select(xp, -xp, d < " + f"{half}u);",
        f"  return Out(oy, ld0(xo) * ld1({strided_offset(bc, rank)}) + rot * ld2({strided_offset(bs, rank)}));",
    ])


@dataclass(frozen=True)
class AddManySpec:
    """t += s for `n` contiguous tensors of one 32- or 64-bit dtype, each in its own binding."""

    dtype: str
    n: int


def add_many_kernel(spec: AddManySpec) -> Kernel:
    """Parameter block: (offset, length) per tensor, then s; grid: grid_1d of the longest."""
    d, n = dtype(spec.dtype), spec.n
    sig = Signature()
    for j in range(n):
        words(sig, f"X{j}", True)
    words(sig, "P")
    body = []
    for j in range(n):
        body.append(loader(d, f"X{j}") + element_store(d, f"X{j}")[1])
    apply = "\n".join(f"  if (t < P[{2 * j + 1}u]) {{ st_X{j}(P[{2 * j}u] + t, ld_X{j}(P[{2 * j}u] + t) + s); }}"
                      for j in range(n))
    return sig.kernel(f"add_many{n}", WGSL_DTYPE_HELPERS + "".join(body) + f"""
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}) {{
  let t = {THREAD_ID.format(wg=WG)};
  let s = bitcast<{d.kind}>(P[{2 * n}u]);
{apply}
}}
""")
