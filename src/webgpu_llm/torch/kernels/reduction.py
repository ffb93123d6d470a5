"""Reductions over any set of dimensions, and softmax along one: a workgroup per output row.

The input is seen as outer (kept) dimensions x inner (reduced) dimensions, each part
collapsed separately; a workgroup walks the inner part of one outer index with strided loads
and reduces in workgroup memory. Accumulation is in f32 (floats) or i32 (integers).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import torch

from ..context import ctx
from ..dtypes import WGSL_DTYPE_HELPERS, dtype_of
from .common import (
    GROUP_ID,
    MAIN_ARGS,
    binding,
    coords,
    element_store,
    grid_1d,
    grid_rows,
    loader,
    storage_decl,
    strided_offset,
)
from .elementwise import collapse

WG = 256

# op: (init for f32, init for i32, combine of acc and v)
_OPS = {
    "sum": ("0.0", "0i", "acc + v"),
    "max": ("-inf()", "-2147483647i - 1i", "max(acc, v)"),
    "min": ("inf()", "2147483647i", "min(acc, v)"),
    "all": ("1.0", "1i", "select(0{z}, 1{z}, acc != 0{z} && v != 0{z})"),
    "any": ("0.0", "0i", "select(0{z}, 1{z}, acc != 0{z} || v != 0{z})"),
}


def split(t: torch.Tensor, dims: Sequence[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(outer shape, outer strides, inner shape, inner strides) of `t` reducing over `dims`."""
    red = set(dims)
    keep = [d for d in range(t.dim()) if d not in red]
    return ([t.shape[d] for d in keep], [t.stride(d) for d in keep],
            [t.shape[d] for d in sorted(red)], [t.stride(d) for d in sorted(red)])


def _reduce_wgsl(op: str, in_dt: str, out_dt: str, kind: str, ro: int, ri: int, mean: bool) -> tuple[str, int]:
    idt, odt = dtype_of(in_dt), dtype_of(out_dt)
    atomic, store = element_store(odt)
    ib = 2 + 2 * ro  # input offset + outer strides
    sb = ib + 1 + ro  # inner shape, then inner strides
    cnt = sb + 2 * ri
    z = ".0" if kind == "f32" else "i"
    arg = op in ("argmax", "argmin")
    base_op = {"argmax": "max", "argmin": "min"}.get(op, op)
    init = _OPS[base_op][0 if kind == "f32" else 1]
    inner_off = " + ".join(["base"] + [f"q{d} * P[{sb + ri + d}u]" for d in range(ri)])
    if arg:
        better = ">" if op == "argmax" else "<"
        step = f"if (v {better} acc) {{ acc = v; ai = r; }}"
        merge = (f"let v = rv[lid + s]; let j = ri[lid + s];\n"
                 f"      if (v {better} rv[lid] || (v == rv[lid] && j < ri[lid])) {{ rv[lid] = v; ri[lid] = j; }}")
        result = "i32(ri[0])"
    else:
        step = f"acc = {_OPS[base_op][2].format(z=z)};"
        merge = f"let acc = rv[lid]; let v = rv[lid + s]; rv[lid] = {_OPS[base_op][2].format(z=z)};"
        result = "rv[0] * bitcast<f32>(P[cnt + 1u])" if mean else "rv[0]"
        result = odt.convert(result, kind) if not arg else result
    src = "\n".join([storage_decl(0, "Y", write=True, atomic=atomic), storage_decl(1, "X"), storage_decl(2, "P")])
    src += "\n" + WGSL_DTYPE_HELPERS + loader(idt, "X", kind) + store
    src += f"""
const cnt: u32 = {cnt}u;
var<workgroup> rv: array<{kind}, {WG}>;
var<workgroup> ri: array<u32, {WG}>;
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}) {{
  let o = {GROUP_ID};
  if (o >= P[0]) {{ return; }}
{coords("rem", "o", 2, ro)}
  let base = {strided_offset(ib, ro)};
  let oy = {" + ".join(["P[1]"] + [f"c{d} * P[{2 + ro + d}u]" for d in range(ro)])};
  var acc = {init};
  var ai = 0u;
  for (var r = lid; r < P[cnt]; r += {WG}u) {{
{coords("rr", "r", sb, ri, "q")}
    let v = ld_X({inner_off});
    {step}
  }}
  rv[lid] = acc;
  ri[lid] = ai;
  workgroupBarrier();
  for (var s = {WG // 2}u; s > 0u; s = s >> 1u) {{
    if (lid < s) {{
      {merge}
    }}
    workgroupBarrier();
  }}
  if (lid == 0u) {{ st_Y(oy, {result}); }}
}}
"""
    return src, 2


def reduce(op: str, x: torch.Tensor, dims: Sequence[int], out: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """out (shape: x's kept dimensions, keepdim or not) = op over `dims` of x.

    op: sum | max | min | all | any | argmax | argmin; `mean` divides a sum by the count.
    """
    oshape, ostr_in, ishape, istr = split(x, dims)
    kept = [d for d in range(x.dim()) if d not in set(dims)]
    out_str = [out.stride(d) for d in kept] if out.dim() == x.dim() else list(out.stride())
    cshape, (cstr_out, cstr_in) = collapse(oshape, [out_str, ostr_in])
    ishape_c, (istr_c,) = collapse(ishape, [istr])
    count = 1
    for s in ishape:
        count *= s
    n_out = out.numel()
    if n_out == 0:
        return out
    floating = x.dtype.is_floating_point or mean
    kind = "f32" if floating else "i32"
    ro, ri = len(cshape), len(ishape_c)
    key = ("reduce", op, x.dtype, out.dtype, kind, ro, ri, mean)
    stream = ctx().stream
    name = f"reduce_{op}"
    kernel = stream.kernel(key, lambda: (name, *_reduce_wgsl(op, x.dtype, out.dtype, kind, ro, ri, mean)))
    words = [n_out, out.storage_offset(), *cshape, *cstr_out, x.storage_offset(), *cstr_in, *ishape_c, *istr_c,
             count]
    params = struct.pack(f"<{len(words)}I", *words) + struct.pack("<f", 1.0 / max(count, 1))
    stream.launch(kernel, [binding(out), binding(x)], params, grid_rows(n_out))
    return out


def _softmax_wgsl(in_dt: str, out_dt: str, ro: int, log: bool) -> tuple[str, int]:
    idt, odt = dtype_of(in_dt), dtype_of(out_dt)
    atomic, store = element_store(odt)
    ib = 2 + 2 * ro  # input offset + outer strides, then length, input stride, output stride
    ln = ib + 1 + ro
    value = "(v - mx) - log(z)" if log else "exp(v - mx) / z"
    src = "\n".join([storage_decl(0, "Y", write=True, atomic=atomic), storage_decl(1, "X"), storage_decl(2, "P")])
    src += "\n" + WGSL_DTYPE_HELPERS + loader(idt, "X", "f32") + store + f"""
var<workgroup> red: array<f32, {WG}>;
fn reduce_max(v: f32, lid: u32) -> f32 {{
  red[lid] = v;
  workgroupBarrier();
  for (var s = {WG // 2}u; s > 0u; s = s >> 1u) {{
    if (lid < s) {{ red[lid] = max(red[lid], red[lid + s]); }}
    workgroupBarrier();
  }}
  let r = red[0];
  workgroupBarrier();
  return r;
}}
fn reduce_sum(v: f32, lid: u32) -> f32 {{
  red[lid] = v;
  workgroupBarrier();
  for (var s = {WG // 2}u; s > 0u; s = s >> 1u) {{
    if (lid < s) {{ red[lid] = red[lid] + red[lid + s]; }}
    workgroupBarrier();
  }}
  let r = red[0];
  workgroupBarrier();
  return r;
}}
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}) {{
  let o = {GROUP_ID};
  if (o >= P[0]) {{ return; }}
{coords("rem", "o", 2, ro)}
  let base = {strided_offset(ib, ro)};
  let oy = {" + ".join(["P[1]"] + [f"c{d} * P[{2 + ro + d}u]" for d in range(ro)])};
  let n = P[{ln}u];
  let sx = P[{ln + 1}u];
  let sy = P[{ln + 2}u];
  var m = -inf();
  for (var j = lid; j < n; j += {WG}u) {{ m = max(m, ld_X(base + j * sx)); }}
  let mx = reduce_max(m, lid);
  var s = 0.0;
  for (var j = lid; j < n; j += {WG}u) {{ s += exp(ld_X(base + j * sx) - mx); }}
  let z = reduce_sum(s, lid);
  for (var j = lid; j < n; j += {WG}u) {{
    let v = ld_X(base + j * sx);
    st_Y(oy + j * sy, {odt.convert(value, "f32")});
  }}
}}
"""
    return src, 2


def softmax(x: torch.Tensor, dim: int, out: torch.Tensor, log: bool = False) -> torch.Tensor:
    """out = (log_)softmax(x) along `dim` (out has x's shape)."""
    if out.numel() == 0:
        return out
    oshape, ostr_in, _, _ = split(x, [dim])
    out_str = [out.stride(d) for d in range(x.dim()) if d != dim]
    cshape, (cstr_out, cstr_in) = collapse(oshape, [out_str, ostr_in])
    ro = len(cshape)
    rows = out.numel() // x.shape[dim]
    key = ("softmax", x.dtype, out.dtype, ro, log)
    stream = ctx().stream
    kernel = stream.kernel(key, lambda: ("softmax", *_softmax_wgsl(x.dtype, out.dtype, ro, log)))
    words = [rows, out.storage_offset(), *cshape, *cstr_out, x.storage_offset(), *cstr_in,
             x.shape[dim], x.stride(dim), out.stride(dim)]
    stream.launch(kernel, [binding(out), binding(x)], struct.pack(f"<{len(words)}I", *words), grid_rows(rows))
    return out


def _cumsum_wgsl(in_dt: str, out_dt: str, kind: str, ro: int) -> tuple[str, int]:
    idt, odt = dtype_of(in_dt), dtype_of(out_dt)
    atomic, store = element_store(odt)
    ib = 2 + 2 * ro
    ln = ib + 1 + ro
    src = "\n".join([storage_decl(0, "Y", write=True, atomic=atomic), storage_decl(1, "X"), storage_decl(2, "P")])
    src += "\n" + WGSL_DTYPE_HELPERS + loader(idt, "X", kind) + store + f"""
@compute @workgroup_size(64)
fn main({MAIN_ARGS}) {{
  let o = gid.x + gid.y * nwg.x * 64u;
  if (o >= P[0]) {{ return; }}
{coords("rem", "o", 2, ro)}
  let base = {strided_offset(ib, ro)};
  let oy = {" + ".join(["P[1]"] + [f"c{d} * P[{2 + ro + d}u]" for d in range(ro)])};
  var acc = {"0.0" if kind == "f32" else "0i"};
  for (var j = 0u; j < P[{ln}u]; j++) {{
    acc += ld_X(base + j * P[{ln + 1}u]);
    st_Y(oy + j * P[{ln + 2}u], {odt.convert("acc", kind)});
  }}
}}
"""
    return src, 2


def cumsum(x: torch.Tensor, dim: int, out: torch.Tensor) -> torch.Tensor:
    """out = x.cumsum(dim): one thread per row, in order (rows are short where this is used)."""
    if out.numel() == 0:
        return out
    if x.dim() == 0:
        x, out = x.reshape(1), out.reshape(1)
    oshape, ostr_in, _, _ = split(x, [dim])
    out_str = [out.stride(d) for d in range(x.dim()) if d != dim]
    cshape, (cstr_out, cstr_in) = collapse(oshape, [out_str, ostr_in])
    ro = len(cshape)
    rows = out.numel() // x.shape[dim]
    kind = "f32" if out.dtype.is_floating_point else "i32"
    key = ("cumsum", x.dtype, out.dtype, ro)
    stream = ctx().stream
    kernel = stream.kernel(key, lambda: ("cumsum", *_cumsum_wgsl(x.dtype, out.dtype, kind, ro)))
    words = [rows, out.storage_offset(), *cshape, *cstr_out, x.storage_offset(), *cstr_in,
             x.shape[dim], x.stride(dim), out.stride(dim)]
    stream.launch(kernel, [binding(out), binding(x)], struct.pack(f"<{len(words)}I", *words), grid_1d(rows, 64))
    return out
