"""RMSNorm in one launch: a workgroup per row, as transformers' Llama/Qwen2 modules compute it.

y = w * round_x(x * rsqrt(mean(x^2) + eps)), in f32, where round_x rounds to x's dtype (the
module casts the normalised row back before the weight multiplies it). With a residual r,
the kernel first forms h = x + r, stores it (the next residual) and normalises h.
"""

from __future__ import annotations

import struct

import torch

from ..context import ctx
from ..dtypes import WGSL_DTYPE_HELPERS, dtype_of
from .common import GROUP_ID, MAIN_ARGS, binding, coords, element_store, grid_rows, loader, storage_decl
from .elementwise import collapse

WG = 256


def _geometry(i: int, rank: int) -> int:
    """Parameter index of tensor i's (offset, row strides[rank], last-dim stride); i: Y, X, R, H, then
    the weight's (offset, stride) and the leading shape."""
    return 3 + i * (rank + 2)


def _wgsl(xdt: str, wdt: str, ydt: str, rank: int, residual: bool) -> tuple[str, int]:
    x, w, y = dtype_of(xdt), dtype_of(wdt), dtype_of(ydt)
    atomic, store = element_store(y)
    decls = [storage_decl(0, "Y", write=True, atomic=atomic), storage_decl(1, "X"), storage_decl(2, "W")]
    nb = 3
    loads = loader(x, "X", "f32") + loader(w, "W", "f32")
    if residual:  # H = X + R is written back: it is the next residual
        h_atomic, h_store = element_store(x, "H")
        decls += [storage_decl(3, "R"), storage_decl(4, "H", write=True, atomic=h_atomic)]
        store += h_store
        loads += loader(x, "R", "f32")
        nb = 5
    decls.append(storage_decl(nb, "P"))

    def row(i: int) -> str:
        b = _geometry(i, rank)
        return " + ".join([f"P[{b}u]"] + [f"c{d} * P[{b + 1 + d}u]" for d in range(rank)])

    def last(i: int) -> str:
        return f"P[{_geometry(i, rank) + rank + 1}u]"

    wb = _geometry(4, rank)
    value = "ld_X(xb + j * {xl})" + (" + ld_R(rb + j * {rl})" if residual else "")
    value = x.round(value.format(xl=last(1), rl=last(2)))
    bases = f"  let yb = {row(0)};\n  let xb = {row(1)};\n"
    if residual:
        bases += f"  let rb = {row(2)};\n  let hb = {row(3)};\n"
    keep = f"    st_H(hb + j * {last(3)}, {x.convert('v', 'f32')});\n" if residual else ""
    out = y.convert(f"ld_W(P[{wb}u] + j * P[{wb + 1}u]) * n", "f32")
    src = "\n".join(decls) + "\n" + WGSL_DTYPE_HELPERS + loads + store + f"""
var<workgroup> red: array<f32, {WG}>;
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}) {{
  let o = {GROUP_ID};
  if (o >= P[0]) {{ return; }}
{coords("rem", "o", wb + 2, rank)}
  let D = P[1];
{bases}  var ss = 0.0;
  for (var j = lid; j < D; j += {WG}u) {{
    let v = {value};
{keep}    ss += v * v;
  }}
  red[lid] = ss;
  workgroupBarrier();
  for (var s = {WG // 2}u; s > 0u; s = s >> 1u) {{
    if (lid < s) {{ red[lid] = red[lid] + red[lid + s]; }}
    workgroupBarrier();
  }}
  let r = inverseSqrt(red[0] / f32(D) + bitcast<f32>(P[2]));
  for (var j = lid; j < D; j += {WG}u) {{
    let v = {value};
    let n = {x.round("v * r")};
    st_Y(yb + j * {last(0)}, {out});
  }}
}}
"""
    return src, nb


def rms_norm(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None, h: torch.Tensor | None = None) -> torch.Tensor:
    """y = rmsnorm(x (+ residual)) * w over the last dimension; h receives x + residual."""
    d = x.shape[-1]
    rows = x.numel() // d if d else 0
    if rows == 0:
        return y
    lead = list(x.shape[:-1]) or [1]
    tensors = [y, x] + ([residual, h] if residual is not None else [])
    strides = [list(t.stride()[:-1]) or [0] for t in tensors]
    shape, cstrides = collapse(lead, strides)
    rank = len(shape)
    words = [rows, d, struct.unpack("<I", struct.pack("<f", eps))[0]]
    for t, st in zip(tensors, cstrides):
        words += [t.storage_offset(), *st, t.stride(-1)]
    if residual is None:
        words += [0] * (2 * (rank + 2))
    words += [w.storage_offset(), w.stride(-1), *shape]
    key = ("rms_norm", x.dtype, w.dtype, y.dtype, rank, residual is not None)
    stream = ctx().stream
    kernel = stream.kernel(key, lambda: ("rms_norm", *_wgsl(x.dtype, w.dtype, y.dtype, rank, residual is not None)))
    binds = [binding(y), binding(x), binding(w)]
    if residual is not None:
        binds += [binding(residual), binding(h)]
    stream.launch(kernel, binds, struct.pack(f"<{len(words)}I", *words), grid_rows(rows))
    return y
