"""Pointwise kernels over strided, broadcast operands of any dtype.

One WGSL kernel per (expression, dtypes, rank): shapes, strides, offsets and scalars travel in
the parameter block, so a decode loop whose lengths change reuses the same pipelines. Before
launching, dimensions that are contiguous in every operand are merged (most launches end up
rank 1 or 2), as torch's TensorIterator does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..context import ctx
from ..dtypes import WGSL_DTYPE_HELPERS, dtype_of
from . import mapping
from .common import MAIN_ARGS, THREAD_ID, WG, binding, element_store, grid_1d, loader, pack, storage_decl


@dataclass(frozen=True)
class Pointwise:
    """An expression over inputs a0..aN (values of `kind`) and scalars s0..sM (also `kind`)."""

    name: str
    expr: str
    kind: str  # compute type of the inputs and scalars: f32 | i32
    result: str  # type of the expression: f32 | i32


def broadcast_strides(t: torch.Tensor, shape: Sequence[int]) -> list[int]:
    """Strides of `t` seen as `shape` (0 along broadcast dimensions)."""
    r = len(shape)
    st = [0] * r
    off = r - t.dim()
    for d, (s, k) in enumerate(zip(t.shape, t.stride())):
        st[off + d] = k if s != 1 else 0
    return st


def collapse(shape: Sequence[int], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Merge dimensions that are contiguous in every operand; drop size-1 dimensions."""
    dims: list[tuple[int, list[int]]] = []
    n = len(strides)
    for d, size in enumerate(shape):
        if size == 1:
            continue
        st = [s[d] for s in strides]
        if dims:
            psize, pst = dims[-1]
            if all(pst[k] == st[k] * size for k in range(n)):
                dims[-1] = (psize * size, st)
                continue
        dims.append((size, st))
    if not dims:
        return [1], [[0] for _ in range(n)]
    return [s for s, _ in dims], [[st[k] for _, st in dims] for k in range(n)]


def _body(op: Pointwise, n_in: int, n_scalars: int, out_kind_convert: str, rank: int) -> str:
    base = mapping.extra_base(rank)
    lines = []
    for k in range(n_in):
        b = base + k * (rank + 1)
        idx = " + ".join([f"P[{b}]"] + [f"c{d} * P[{b + 1 + d}]" for d in range(rank)])
        lines.append(f"  let a{k} = ld{k}({idx});")
    sc = base + n_in * (rank + 1)
    lines += [f"  let s{j} = bitcast<{op.kind}>(P[{sc + j}]);" for j in range(n_scalars)]
    lines.append(f"  return Out(oy, {out_kind_convert});")
    return "\n".join(lines)


def run(op: Pointwise, out: torch.Tensor, inputs: Sequence[torch.Tensor], scalars: Sequence[float] = ()) -> None:
    """out[...] = op(inputs broadcast to out.shape, scalars)."""
    if out.numel() == 0:
        return
    shape = list(out.shape)
    strides = [list(out.stride())] + [broadcast_strides(t, shape) for t in inputs]
    cshape, cstrides = collapse(shape, strides)
    words: list[int] = []
    for t, st in zip(inputs, cstrides[1:]):
        words.append(t.storage_offset())
        words.extend(st)
    value = dtype_of(out.dtype).convert(f"({op.expr})", op.result)
    n_in, n_sc = len(inputs), len(scalars)
    mapping.launch(("pw", op.expr, op.kind, op.result, n_sc), op.name, out, cshape, cstrides[0], inputs,
                   [op.kind] * n_in, lambda r: _body(op, n_in, n_sc, value, r), pack(words, scalars, op.kind))


COPY = Pointwise("copy", "a0", "f32", "f32")
COPY_INT = Pointwise("copy", "a0", "i32", "i32")


def copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    """dst[...] = src (broadcast), converting dtypes on the GPU."""
    floats = "f32" in (dtype_of(src.dtype).kind, dtype_of(dst.dtype).kind)
    run(COPY if floats else COPY_INT, dst, [src])


MAX_ADD_MANY = 32  # tensors per launch at most (one kernel per count: keep the variants few)


def _add_many_wgsl(dt: torch.dtype, n: int) -> str:
    d = dtype_of(dt)
    decls = [storage_decl(j, f"X{j}", True) for j in range(n)] + [storage_decl(n, "P")]
    body = []
    for j in range(n):
        body.append(loader(d, f"X{j}") + element_store(d, f"X{j}")[1])
    apply = "\n".join(f"  if (t < P[{2 * j + 1}u]) {{ st_X{j}(P[{2 * j}u] + t, ld_X{j}(P[{2 * j}u] + t) + s); }}"
                      for j in range(n))
    return "\n".join(decls) + "\n" + WGSL_DTYPE_HELPERS + "".join(body) + f"""
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}) {{
  let t = {THREAD_ID.format(wg=WG)};
  let s = bitcast<{d.kind}>(P[{2 * n}u]);
{apply}
}}
"""


def add_many_(tensors: Sequence[torch.Tensor], value: float) -> None:
    """t += value for every tensor, as many per launch as the adapter has storage bindings for
    (the length counters of a static KV cache, one per layer, advance in one launch, not one each).

    The tensors must be contiguous webgpu tensors of one 32- or 64-bit dtype.
    """
    dt = tensors[0].dtype
    d = dtype_of(dt)
    c = ctx()
    stream = c.stream
    per = max(1, min(MAX_ADD_MANY, int(c.gpu.limits.get("max-storage-buffers-per-shader-stage", 8)) - 1))
    for lo in range(0, len(tensors), per):
        group = tensors[lo:lo + per]
        n = len(group)
        kernel = stream.kernel(("add_many", dt, n), lambda n=n: (f"add_many{n}", _add_many_wgsl(dt, n), n))
        words = [w for t in group for w in (t.storage_offset(), t.numel())]
        stream.launch(kernel, [binding(t) for t in group], pack(words, [value], d.kind),
                      grid_1d(max(t.numel() for t in group)))
