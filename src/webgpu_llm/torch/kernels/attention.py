"""Scaled dot-product attention: one workgroup per query row, online softmax over key chunks.

Threads take one key each for the scores and one output dimension each for the weighted sum
of values, so a row needs no score buffer beyond one chunk. Grouped-query attention reads
the key/value head h * Hk / H; masks (additive or boolean) broadcast through zero strides.
The query may be rotated (RoPE) as it is loaded, which saves the compiler a launch.
"""

from __future__ import annotations

import struct

import torch

from ..context import ctx
from ..dtypes import WGSL_DTYPE_HELPERS, dtype_of
from .common import GROUP_ID, MAIN_ARGS, binding, element_store, grid_rows, loader, storage_decl

WG = 128
MAX_D = 512

# Parameter words: 0 B, 1 H, 2 Lq, 3 Lk, 4 D, 5 Dv, 6 Hk, 7 causal,
# 8.. q (off, sb, sh, si, sd), 13.. k (off, sb, sh, sj, sd), 18.. v, 23.. y, 28.. mask (off, sb, sh, si, sj),
# 33 scale (f32), 34.. cos (off, sb, sh, si, sd), 39.. sin
_Q, _K, _V, _Y, _M, _COS, _SIN = 8, 13, 18, 23, 28, 34, 39


def _wgsl(qdt: str, kdt: str, vdt: str, ydt: str, mdt: str | None, rope_dt: str | None = None) -> tuple[str, int]:
    y = dtype_of(ydt)
    atomic, store = element_store(y)
    decls = [storage_decl(0, "Y", write=True, atomic=atomic), storage_decl(1, "Q"), storage_decl(2, "K"),
             storage_decl(3, "V")]
    loads = loader(dtype_of(qdt), "Q", "f32") + loader(dtype_of(kdt), "K", "f32") + loader(dtype_of(vdt), "V", "f32")
    nb = 4
    mask = ""
    if mdt is not None:
        decls.append(storage_decl(4, "M"))
        md = dtype_of(mdt)
        loads += loader(md, "M", "f32")
        nb = 5
        at = "P[28] + b * P[29] + h * P[30] + i * P[31] + j * P[32]"
        mask = (f"      if (ld_M({at}) == 0.0) {{ s = NEG; }}" if md.name == "b8"
                else f"      s = s + ld_M({at});")
    qload = "ld_Q(qb + d * P[12])"
    if rope_dt is not None:  # q * cos + rotate_half(q) * sin, rotate_half pairs d with d +- D/2
        decls += [storage_decl(nb, "COS"), storage_decl(nb + 1, "SIN")]
        loads += loader(dtype_of(rope_dt), "COS", "f32") + loader(dtype_of(rope_dt), "SIN", "f32")
        nb += 2
        at = "P[{o}] + b * P[{o1}] + h * P[{o2}] + i * P[{o3}] + d * P[{o4}]"
        cs = at.format(o=_COS, o1=_COS + 1, o2=_COS + 2, o3=_COS + 3, o4=_COS + 4)
        sn = at.format(o=_SIN, o1=_SIN + 1, o2=_SIN + 2, o3=_SIN + 3, o4=_SIN + 4)
        qload = (f"(ld_Q(qb + d * P[12]) * ld_COS({cs}) + select(1.0, -1.0, d < D / 2u) * "
                 f"ld_Q(qb + select(d - D / 2u, d + D / 2u, d < D / 2u) * P[12]) * ld_SIN({sn}))")
    decls.append(storage_decl(nb, "P"))
    dpt = MAX_D // WG
    src = "\n".join(decls) + "\n" + WGSL_DTYPE_HELPERS + loads + store + f"""
const NEG: f32 = -3.4028234663852886e38;
var<workgroup> qs: array<f32, {MAX_D}>;
var<workgroup> ps: array<f32, {WG}>;
var<workgroup> red: array<f32, {WG}>;
fn wg_max(v: f32, lid: u32) -> f32 {{
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
fn wg_sum(v: f32, lid: u32) -> f32 {{
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
  let g = {GROUP_ID};
  let H = P[1]; let Lq = P[2]; let Lk = P[3]; let D = P[4]; let Dv = P[5];
  if (g >= P[0] * H * Lq) {{ return; }}
  let i = g % Lq;
  let h = (g / Lq) % H;
  let b = g / (Lq * H);
  let kh = h * P[6] / H;
  let scale = bitcast<f32>(P[33]);
  let qb = P[8] + b * P[9] + h * P[10] + i * P[11];
  for (var d = lid; d < D; d += {WG}u) {{ qs[d] = {qload} * scale; }}
  workgroupBarrier();
  var n = Lk;
  if (P[7] != 0u) {{ n = min(Lk, i + 1u); }}
  let kb = P[13] + b * P[14] + kh * P[15];
  let vb = P[18] + b * P[19] + kh * P[20];
  var m = NEG;
  var l = 0.0;
  var acc: array<f32, {dpt}>;
  for (var j0 = 0u; j0 < n; j0 += {WG}u) {{
    let j = j0 + lid;
    var s = NEG;
    if (j < n) {{
      s = 0.0;
      let kr = kb + j * P[16];
      for (var d = 0u; d < D; d++) {{ s += qs[d] * ld_K(kr + d * P[17]); }}
{mask}
    }}
    let mn = max(m, wg_max(s, lid));
    var p = 0.0;
    if (s > NEG) {{ p = exp(s - mn); }}
    ps[lid] = p;
    let corr = select(exp(m - mn), 0.0, m <= NEG);
    l = l * corr + wg_sum(p, lid);
    m = mn;
    let cnt = min({WG}u, n - j0);
    for (var t = 0u; t < {dpt}u; t++) {{
      let d = lid + t * {WG}u;
      if (d < Dv) {{
        var a = acc[t] * corr;
        for (var jj = 0u; jj < cnt; jj++) {{ a += ps[jj] * ld_V(vb + (j0 + jj) * P[21] + d * P[22]); }}
        acc[t] = a;
      }}
    }}
    workgroupBarrier();
  }}
  let yb = P[23] + b * P[24] + h * P[25] + i * P[26];
  for (var t = 0u; t < {dpt}u; t++) {{
    let d = lid + t * {WG}u;
    if (d < Dv) {{ st_Y(yb + d * P[27], {y.convert("select(acc[t] / l, 0.0, l == 0.0)", "f32")}); }}
  }}
}}
"""
    return src, nb


def _geom(t: torch.Tensor) -> list[int]:
    """offset and the 4 strides, with 0 where a dimension of size 1 broadcasts."""
    return [t.storage_offset(), *[0 if t.shape[d] == 1 else t.stride(d) for d in range(4)]]


def attention(y: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              causal: bool, scale: float, cos: torch.Tensor | None = None,
              sin: torch.Tensor | None = None) -> torch.Tensor:
    """y[b,h,i] = softmax(scale * q[b,h,i] . k[b,kh]^T + mask) @ v[b,kh] for 4-d operands, with
    kh = h * Hk / H; q is first rotated by cos/sin (broadcasting to q's shape) if given."""
    b, h, lq, d = q.shape
    hk, lk, dv = k.shape[1], k.shape[2], v.shape[3]
    if d > MAX_D or dv > MAX_D:
        raise NotImplementedError(f"attention head size {max(d, dv)} over {MAX_D}")
    if y.numel() == 0:
        return y
    words = [b, h, lq, lk, d, dv, hk, int(causal), *_geom(q), *_geom(k), *_geom(v), *_geom(y)]
    words += _geom(mask.expand(b, h, lq, lk)) if mask is not None else [0] * 5
    rope_dt = cos.dtype if cos is not None else None
    mdt = mask.dtype if mask is not None else None
    key = ("sdpa", q.dtype, k.dtype, v.dtype, y.dtype, mdt, rope_dt)
    stream = ctx().stream
    kernel = stream.kernel(key, lambda: ("sdpa", *_wgsl(q.dtype, k.dtype, v.dtype, y.dtype, mdt, rope_dt)))
    binds = [binding(y), binding(q), binding(k), binding(v)] + ([binding(mask)] if mask is not None else [])
    rope_words: list[int] = []
    if cos is not None and sin is not None:
        binds += [binding(cos), binding(sin)]
        rope_words = _geom(cos.expand(b, h, lq, d)) + _geom(sin.expand(b, h, lq, d))
    params = struct.pack(f"<{len(words)}I", *words) + struct.pack("<f", scale)
    params += struct.pack(f"<{len(rope_words)}I", *rope_words)
    stream.launch(kernel, binds, params, grid_rows(b * h * lq))
    return y
