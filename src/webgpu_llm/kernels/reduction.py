"""Reductions over any set of dimensions, softmax and cumsum along one, over strided operands:
a workgroup per output row (cumsum: a thread per row).

The input is seen as outer (kept) dimensions x inner (reduced) dimensions, each part
collapsed separately by the launcher; a workgroup walks the inner part of one outer index with
strided loads and reduces in workgroup memory. Accumulation is in f32 (floats) or i32
(integers).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.program import Kernel
from .common import Signature, wgsl_reduce
from .dtypes import WGSL_DTYPE_HELPERS, dtype, element_store, loader
from .strided import GROUP_ID, MAIN_ARGS, coords, strided_offset, words

WG = 256

# op: (init for f32, init for i32, combine of acc and v)
_OPS = {
    "sum": ("0.0", "0i", "acc + v"),
    "max": ("-inf()", "-2147483647i - 1i", "max(acc, v)"),
    "min": ("inf()", "2147483647i", "min(acc, v)"),
    "all": ("1.0", "1i", "select(0{z}, 1{z}, acc != 0{z} && v != 0{z})"),
    "any": ("0.0", "0i", "select(0{z}, 1{z}, acc != 0{z} || v != 0{z})"),
}


def _io(x: str, y: str, kind: str) -> tuple[Signature, str]:
    """Bindings Y (written), X and P, and the helpers loading X as `kind` and storing Y."""
    atomic, store = element_store(dtype(y))
    sig = words(words(words(Signature(), "Y", write=True, atomic=atomic), "X"), "P")
    return sig, WGSL_DTYPE_HELPERS + loader(dtype(x), "X", kind) + store


def _row(o: str, ro: int) -> str:
    """WGSL: row `o` of the `ro` outer dimensions (returning past the last row), its first
    element in x (`base`) and in y (`oy`). Parameters: rows, y offset, outer shape, y strides,
    x offset, x strides."""
    oy = " + ".join(["P[1]"] + [f"c{d} * P[{2 + ro + d}u]" for d in range(ro)])
    return f"""  let o = {o};
  if (o >= P[0]) {{ return; }}
{coords("rem", "o", 2, ro)}
  let base = {strided_offset(2 + 2 * ro, ro)};
  let oy = {oy};"""


@dataclass(frozen=True)
class ReduceSpec:
    """op (sum | max | min | all | any | argmax | argmin) of x over `inner` collapsed dimensions
    into y, for each index of `outer` collapsed dimensions; `mean` divides a sum by the count.

    Parameters: rows, y offset, outer shape, y strides, x offset, x outer strides, inner shape,
    inner strides, count, 1 / count (f32)."""

    op: str
    x: str
    y: str
    kind: str  # accumulator: f32 | i32
    outer: int
    inner: int
    mean: bool


def reduce_kernel(s: ReduceSpec) -> Kernel:
    """grid: grid_rows(output elements)."""
    ro, ri, kind, op = s.outer, s.inner, s.kind, s.op
    sig, helpers = _io(s.x, s.y, kind)
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
        result = "rv[0] * bitcast<f32>(P[cnt + 1u])" if s.mean else "rv[0]"
        result = dtype(s.y).convert(result, kind)
    return sig.kernel(f"reduce_{op}", helpers + f"""
const cnt: u32 = {cnt}u;
var<workgroup> rv: array<{kind}, {WG}>;
var<workgroup> ri: array<u32, {WG}>;
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}) {{
{_row(GROUP_ID, ro)}
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
""")


@dataclass(frozen=True)
class SoftmaxSpec:
    """(log_)softmax of x along one dimension into y, for each index of `outer` collapsed
    dimensions. Parameters: rows, y offset, outer shape, y strides, x offset, x outer strides,
    length, x stride, y stride."""

    x: str
    y: str
    outer: int
    log: bool


def softmax_kernel(s: SoftmaxSpec) -> Kernel:
    """grid: grid_rows(rows)."""
    ro = s.outer
    sig, helpers = _io(s.x, s.y, "f32")
    ib = 2 + 2 * ro  # input offset + outer strides, then length, input stride, output stride
    ln = ib + 1 + ro
    value = "(v - mx) - log(z)" if s.log else "exp(v - mx) / z"
    return sig.kernel("softmax", helpers + wgsl_reduce("red_max", "max", WG) + wgsl_reduce("red_sum", "sum", WG) + f"""
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}) {{
{_row(GROUP_ID, ro)}
  let n = P[{ln}u];
  let sx = P[{ln + 1}u];
  let sy = P[{ln + 2}u];
  var m = -inf();
  for (var j = lid; j < n; j += {WG}u) {{ m = max(m, ld_X(base + j * sx)); }}
  let mx = red_max(m, lid, 1u);
  var s = 0.0;
  for (var j = lid; j < n; j += {WG}u) {{ s += exp(ld_X(base + j * sx) - mx); }}
  let z = red_sum(s, lid, 1u);
  for (var j = lid; j < n; j += {WG}u) {{
    let v = ld_X(base + j * sx);
    st_Y(oy + j * sy, {dtype(s.y).convert(value, "f32")});
  }}
}}
""")


@dataclass(frozen=True)
class CumsumSpec:
    """x.cumsum along one dimension into y, a thread per row, in order (rows are short where
    this is used); parameters as SoftmaxSpec's."""

    x: str
    y: str
    kind: str  # accumulator: f32 | i32
    outer: int


CUMSUM_WG = 64


def cumsum_kernel(s: CumsumSpec) -> Kernel:
    """grid: grid_1d(rows, CUMSUM_WG)."""
    ro = s.outer
    sig, helpers = _io(s.x, s.y, s.kind)
    ib = 2 + 2 * ro
    ln = ib + 1 + ro
    return sig.kernel("cumsum", helpers + f"""
@compute @workgroup_size({CUMSUM_WG})
fn main({MAIN_ARGS}) {{
{_row(f"gid.x + gid.y * nwg.x * {CUMSUM_WG}u", ro)}
  var acc = {"0.0" if s.kind == "f32" else "0i"};
  for (var j = 0u; j < P[{ln}u]; j++) {{
    acc += ld_X(base + j * P[{ln + 1}u]);
    st_Y(oy + j * P[{ln + 2}u], {dtype(s.y).convert("acc", s.kind)});
  }}
}}
""")
