"""Row-wise kernels, one workgroup per row: the prompt path's embedding lookup and RMSNorm, the
encoders' LayerNorm, and the RMSNorm over strided rows of the torch device."""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.program import Kernel
from .common import Signature, Slots, f16x4_store, wgsl_reduce
from .dtypes import WGSL_DTYPE_HELPERS, dtype, element_store, loader
from .formats import UNIT
from .linear import LinearSpec, loaders_wgsl
from .strided import GROUP_ID, MAIN_ARGS, coords, words

WG = 64
RMS_WG = 256  # threads per row of the strided RMSNorm


def embed_kernel(fmt_segments: LinearSpec, slots: Slots | None = None, scale: float = 1.0) -> Kernel:
    """x[t, :] = E[tokens[pos + t], :] for t < st.n; E given as (possibly split) segments.
    With `slots`, row t's token is at its own slot and position (table `rows`). `scale`
    multiplies the rows (Gemma's sqrt(hidden)).

    `fmt_segments.k` is the hidden size; grid = (n,).
    """
    spec = fmt_segments
    sig = Signature().state()
    sig.storage("tokens", "array<u32>")
    if slots:
        sig.storage("rows", "array<vec2<u32>>")
    loaders = loaders_wgsl(spec, sig)
    sig.storage("x", "array<vec4<f32>>", write=True)
    k4 = spec.k // 4
    at = f"rows[t].y * {slots.token_stride}u + rows[t].x" if slots else "st.pos + t"
    body = loaders + f"""
@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let t = wid.x;
  if (t >= st.n) {{ return; }}
  let tok = min(tokens[{at}], {spec.rows - 1}u);
  for (var u = lid; u < {spec.kp // UNIT}u; u += {WG}u) {{
    let w = load_row(tok, u);
    for (var i = 0u; i < 8u; i++) {{
      if (u * 8u + i < {k4}u) {{ x[t * {k4}u + u * 8u + i] = w[i]{f" * {scale!r}" if scale != 1.0 else ""}; }}
    }}
  }}
}}
"""
    return sig.kernel("embed_" + "+".join(s.fmt for s in spec.segments), body)


RMS_WG = 256  # threads per row of the RMSNorms


def rms_rows_wgsl(args: str, head: str, n: str, first: str, count: str, eps: str, second: str | None,
                  wg: int = RMS_WG) -> str:
    """WGSL of a row-wise RMSNorm, one workgroup of `wg` threads per row (`main(args)`):
    `head` picks the row (returning past the last); a first pass over its `n` elements runs
    `first` for element i, which adds the element's square(s) to `ss` (and may write a sum
    back); the workgroup adds ss up (`wgsl_reduce`) into sc = 1 / sqrt(total / count + eps);
    a second pass runs `second` for element i (None: no second pass, no reduction use)."""
    scale = "" if second is None else (
        f"  let sc = inverseSqrt(red_sum(ss, lid, 1u) / {count} + {eps});\n"
        f"  for (var i = lid; i < {n}; i += {wg}u) {{ {second} }}")
    return wgsl_reduce("red_sum", "sum", wg) + f"""
@compute @workgroup_size({wg})
fn main({args}) {{
{head}
  var ss = 0.0;
  for (var i = lid; i < {n}; i += {wg}u) {{ {first} }}
{scale}
}}
"""


def rmsnorm_kernel(k: int, eps: float, nw_off: int = 0, partials: int = 0, norm: bool = True,
                   gather: bool = False, y_f16: bool = False, also_f16: bool = False) -> Kernel:
    """y[t] = x[t] / rms(x[t]) * w for t < st.n, w at float offset `nw_off` of the parameter
    buffer `pv`; grid = (n,).

    With `partials` > 0 the split-K sums of the previous matmul (`part`, rows t * partials ..)
    are first added to x (the residual add that matmul left out), and x is written back.
    With `norm` False only that addition is done (after the last layer). With `gather`, row t
    of y is x's row `samples[t].x` (the rows a batched step samples from). `y_f16`: y's rows
    as f16s (k a multiple of 8; values past f16's range clamped to it), for f16-tile matmuls
    that read them (LinearSpec.x_f16). `also_f16`: y's rows as f32s and also as f16s in `y16`
    (a mixture's router reads the f32s, its experts the f16s).
    """
    assert not ((y_f16 or also_f16) and (k % 8 or not norm)) and not (y_f16 and also_f16)
    sig = Signature().state()
    if gather:
        assert norm and not partials
        sig.storage("samples", "array<vec4<u32>>")
    sig.storage("x", "array<vec4<f32>>", write=partials > 0)
    if partials:
        sig.storage("part", "array<vec4<f32>>")
    if norm:
        sig.storage("pv", "array<vec4<f32>>")
        sig.storage("y", "array<vec2<u32>>" if y_f16 else "array<vec4<f32>>", write=True)
        if also_f16:
            sig.storage("y16", "array<vec2<u32>>", write=True)
    k4 = k // 4
    add = " ".join(f"v += part[(t * {partials}u + {s}u) * {k4}u + i];" for s in range(partials))
    xr = "samples[t].x" if gather else "t"
    read = f"var v = x[t * {k4}u + i]; {add} x[t * {k4}u + i] = v;" if partials else f"let v = x[{xr} * {k4}u + i];"
    value = f"x[{xr} * {k4}u + i] * sc * pv[{nw_off // 4}u + i]"
    store = f"y[t * {k4}u + i] = {value};" if norm else None
    if y_f16:  # four f16s in two words (pack2x16float takes values in f16's range)
        store = f16x4_store(f"y[t * {k4}u + i]", value)
    if also_f16:
        store = f"let yv = {value}; y[t * {k4}u + i] = yv; " + f16x4_store(f"y16[t * {k4}u + i]", "yv")
    body = rms_rows_wgsl("@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32",
                         "  let t = wid.x;\n  if (t >= st.n) { return; }", f"{k4}u", f"{read} ss += dot(v, v);",
                         f"{float(k)}", f"{eps!r}", store)
    name = ("rmsnorm_gather" if gather else "rmsnorm") + ("_f16" if y_f16 else "_and_f16" if also_f16 else "")
    return sig.kernel(name if norm else "add_partials", body)


def layernorm_kernel(k: int, eps: float, w_off: int, b_off: int, add: str = "") -> Kernel:
    """x[t] = (x[t] - mean) / sqrt(var + eps) * w + b, in place, for t < st.n (torch's
    LayerNorm: the biased variance, taken around the mean in a second pass); w and b at float
    offsets `w_off`, `b_off` (multiples of 4) of the parameter buffer `pv`; grid = (n,).

    `add`: first add to x[t] a row of the table `a` (k floats a row): "row", row
    `rows[t].x` (the row's position, the `rows` table of (position, sequence) pairs: an
    encoder's position embeddings); "first", row 0; "" nothing."""
    assert add in ("", "row", "first") and w_off % 4 == 0 and b_off % 4 == 0
    sig = Signature().state()
    if add == "row":
        sig.storage("rows", "array<vec2<u32>>")
    if add:
        sig.storage("a", "array<vec4<f32>>")
    sig.storage("x", "array<vec4<f32>>", write=True)
    sig.storage("pv", "array<vec4<f32>>")
    k4 = k // 4
    extra = {"": "", "row": f" + a[rows[t].x * {k4}u + i]", "first": " + a[i]"}[add]
    wg = RMS_WG
    body = wgsl_reduce("red_sum", "sum", wg) + f"""
@compute @workgroup_size({wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let t = wid.x;
  if (t >= st.n) {{ return; }}
  var s = 0.0;
  for (var i = lid; i < {k4}u; i += {wg}u) {{
    let v = x[t * {k4}u + i]{extra};
    s += v.x + v.y + v.z + v.w;
  }}
  let mean = red_sum(s, lid, 1u) / {float(k)};
  var ss = 0.0;
  for (var i = lid; i < {k4}u; i += {wg}u) {{
    let d = x[t * {k4}u + i]{extra} - mean;
    ss += dot(d, d);
  }}
  let sc = inverseSqrt(red_sum(ss, lid, 1u) / {float(k)} + {eps!r});
  for (var i = lid; i < {k4}u; i += {wg}u) {{
    let v = x[t * {k4}u + i]{extra};
    x[t * {k4}u + i] = (v - mean) * sc * pv[{w_off // 4}u + i] + pv[{b_off // 4}u + i];
  }}
}}
"""
    return sig.kernel(f"layernorm{'_' + add if add else ''}", body)


@dataclass(frozen=True)
class RmsNormSpec:
    """RMSNorm over strided rows of any float dtype, as transformers' Llama/Qwen2 modules
    compute it: y = w * round_x(x * rsqrt(mean(x^2) + eps)) in f32, where round_x rounds to x's
    dtype (the module casts the normalised row back before the weight multiplies it). With a
    residual r, h = x + r is formed first, stored (the next residual) and normalised.

    Parameters: rows, length, eps (f32); per tensor Y, X (and R, H) its offset, row strides
    over the `rank` collapsed leading dimensions, and last-dimension stride; the weight's
    offset and stride; the leading shape."""

    x: str
    w: str
    y: str
    rank: int
    residual: bool
    wg: int = RMS_WG


def _geometry(i: int, rank: int) -> int:
    """Parameter index of tensor i's (offset, row strides[rank], last-dim stride); i: Y, X, R, H, then
    the weight's (offset, stride) and the leading shape."""
    return 3 + i * (rank + 2)


def rms_norm_kernel(s: RmsNormSpec) -> Kernel:
    """grid: grid_rows(rows)."""
    rank, residual = s.rank, s.residual
    x, w, y = dtype(s.x), dtype(s.w), dtype(s.y)
    atomic, store = element_store(y)
    sig = words(words(words(Signature(), "Y", write=True, atomic=atomic), "X"), "W")
    loads = loader(x, "X", "f32") + loader(w, "W", "f32")
    if residual:  # H = X + R is written back: it is the next residual
        h_atomic, h_store = element_store(x, "H")
        words(words(sig, "R"), "H", write=True, atomic=h_atomic)
        store += h_store
        loads += loader(x, "R", "f32")
    words(sig, "P")

    def row(i: int) -> str:
        b = _geometry(i, rank)
        return " + ".join([f"P[{b}u]"] + [f"c{d} * P[{b + 1 + d}u]" for d in range(rank)])

    def last(i: int) -> str:
        return f"P[{_geometry(i, rank) + rank + 1}u]"

    wb = _geometry(4, rank)
    value = "ld_X(xb + i * {xl})" + (" + ld_R(rb + i * {rl})" if residual else "")
    value = x.round(value.format(xl=last(1), rl=last(2)))
    head = f"  let o = {GROUP_ID};\n  if (o >= P[0]) {{ return; }}\n{coords('rem', 'o', wb + 2, rank)}\n  let D = P[1];\n"
    head += f"  let yb = {row(0)};\n  let xb = {row(1)};"
    if residual:
        head += f"\n  let rb = {row(2)};\n  let hb = {row(3)};"
    keep = f"st_H(hb + i * {last(3)}, {x.convert('v', 'f32')}); " if residual else ""
    out = y.convert(f"ld_W(P[{wb}u] + i * P[{wb + 1}u]) * n", "f32")
    return sig.kernel("rms_norm", WGSL_DTYPE_HELPERS + loads + store + rms_rows_wgsl(
        MAIN_ARGS, head, "D", f"let v = {value}; {keep}ss += v * v;", "f32(D)", "bitcast<f32>(P[2])",
        f"let v = {value}; let n = {x.round('v * sc')}; st_Y(yb + i * {last(0)}, {out});", s.wg))
