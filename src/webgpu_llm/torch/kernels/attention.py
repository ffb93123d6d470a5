"""Scaled dot-product attention with online softmax, split over keys for short queries.

A workgroup takes one query row and a span of its keys, in chunks of KC keys: TPK threads
share each key's dot product (short load chains), the chunk's scores go through workgroup
memory, and the weighted sum of values has each thread own one output dimension for a share
of the chunk's keys. When there are few query rows (decode: one per head) the keys are split
over several workgroups so that the GPU is busy; each writes its (max, sum, weighted values)
and a second launch merges them (flash-decoding). Grouped-query attention reads the key/value
head h * Hk / H; masks (additive or boolean) broadcast through zero strides. The query may be
rotated (RoPE) as it is loaded, which saves the compiler a launch.
"""

from __future__ import annotations

import struct

import torch

from ..context import ctx
from ..dtypes import WGSL_DTYPE_HELPERS, dtype_of
from ..tensors import empty
from .common import GROUP_ID, MAIN_ARGS, binding, element_store, grid_rows, loader, storage_decl

WG = 128
TPK = 4  # threads per key for the scores
KC = WG // TPK  # keys per chunk
MAX_D = 512
TARGET_GROUPS = 1024  # split keys until about this many workgroups run (or one chunk each)

# Parameter words: 0 B, 1 H, 2 Lq, 3 Lk, 4 D, 5 Dv, 6 Hk, 7 causal,
# 8.. q (off, sb, sh, si, sd), 13.. k (off, sb, sh, sj, sd), 18.. v, 23.. y, 28.. mask (off, sb, sh, si, sj),
# 33 scale (f32), 34 splits, 35 keys per split, 36.. cos (off, sb, sh, si, sd), 41.. sin
_Q, _K, _V, _Y, _M, _NS, _SPAN, _COS, _SIN = 8, 13, 18, 23, 28, 34, 35, 36, 41


def _dim_lanes(dv: int) -> int:
    """Threads per output row in the value sum: 64 or 128 (the rest take other keys)."""
    return 64 if dv <= 64 else 128


def _wgsl(qdt: str, kdt: str, vdt: str, ydt: str, mdt: str | None, rope_dt: str | None, d: int, dv: int,
          split: bool) -> tuple[str, int]:
    """The attention kernel for head sizes d, dv; `split` writes per-split partials instead of y.

    The head sizes are constants so that the driver's compiler unrolls the per-thread loops
    and issues their loads together (with runtime bounds each load waited for the last)."""
    dw = _dim_lanes(dv)
    y = dtype_of(ydt)
    atomic, store = element_store(y)
    decls = [storage_decl(0, "Y", write=True, atomic=atomic and not split), storage_decl(1, "Q"),
             storage_decl(2, "K"), storage_decl(3, "V")]
    if split:  # the partials: f32 words
        decls[0] = "@group(0) @binding(0) var<storage, read_write> Y: array<f32>;"
        store = ""
    loads = loader(dtype_of(qdt), "Q", "f32") + loader(dtype_of(kdt), "K", "f32") + loader(dtype_of(vdt), "V", "f32")
    nb = 4
    mask = ""
    if mdt is not None:
        decls.append(storage_decl(4, "M"))
        md = dtype_of(mdt)
        loads += loader(md, "M", "f32")
        nb = 5
        at = "P[28] + b * P[29] + h * P[30] + i * P[31] + j * P[32]"
        mask = (f"        if (ld_M({at}) == 0.0) {{ s = NEG; }}" if md.name == "b8"
                else f"        s = s + ld_M({at});")
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
    kg, dpt = WG // dw, -(-dv // dw)
    kt = -(-d // TPK)  # dims per thread in a key's dot product
    kguard = "if (d < D) " if d % TPK else ""
    if split:  # (weighted values, max, sum) of this split, Dv + 2 floats
        out = """  let ob = (g * (Dv + 2u));
  for (var t = 0u; t < DPT; t++) {
    let d = d0 + t * DW;
    if (kg == 0u && d < Dv) { Y[ob + d] = acc[t]; }
  }
  if (lid == 0u) { Y[ob + Dv] = m; Y[ob + Dv + 1u] = l; }"""
    else:
        out = f"""  let yb = P[23] + b * P[24] + h * P[25] + i * P[26];
  for (var t = 0u; t < DPT; t++) {{
    let d = d0 + t * DW;
    if (kg == 0u && d < Dv) {{ st_Y(yb + d * P[27], {y.convert("select(acc[t] / l, 0.0, l == 0.0)", "f32")}); }}
  }}"""
    src = "\n".join(decls) + "\n" + WGSL_DTYPE_HELPERS + loads + store + f"""
const NEG: f32 = -3.4028234663852886e38;
const DW: u32 = {dw}u;   // threads per output row in the value sum
const KG: u32 = {kg}u;   // key groups in the value sum
const DPT: u32 = {dpt}u;
const D: u32 = {d}u;
const Dv: u32 = {dv}u;
var<workgroup> qs: array<f32, {d}>;
var<workgroup> sp: array<f32, {WG}>;
var<workgroup> ps: array<f32, {KC}>;
var<workgroup> accs: array<f32, {dpt * dw * max(kg - 1, 1)}>;
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}) {{
  let g = {GROUP_ID};
  let H = P[1]; let Lq = P[2]; let Lk = P[3];
  let NS = P[{_NS}];
  let row = g / NS;
  let split = g % NS;
  if (row >= P[0] * H * Lq) {{ return; }}
  let i = row % Lq;
  let h = (row / Lq) % H;
  let b = row / (Lq * H);
  let kh = h * P[6] / H;
  let scale = bitcast<f32>(P[33]);
  let qb = P[8] + b * P[9] + h * P[10] + i * P[11];
  for (var d = lid; d < D; d += {WG}u) {{ qs[d] = {qload} * scale; }}
  workgroupBarrier();
  var n = Lk;
  if (P[7] != 0u) {{ n = min(Lk, i + 1u); }}
  let j_begin = split * P[{_SPAN}];
  let j_end = min(n, j_begin + P[{_SPAN}]);
  let kb = P[13] + b * P[14] + kh * P[15];
  let vb = P[18] + b * P[19] + kh * P[20];
  let d0 = lid % DW;
  let kg = lid / DW;
  var m = NEG;
  var l = 0.0;
  var acc: array<f32, DPT>;
  for (var j0 = j_begin; j0 < j_end; j0 += {KC}u) {{
    {{  // this thread's share of a key's dot product
      let j = j0 + lid / {TPK}u;
      var s = 0.0;
      if (j < j_end) {{
        let kr = kb + j * P[16];
        for (var t = 0u; t < {kt}u; t++) {{
          let d = lid % {TPK}u + t * {TPK}u;
          {kguard}{{ s += qs[d] * ld_K(kr + d * P[17]); }}
        }}
      }}
      sp[lid] = s;
    }}
    workgroupBarrier();
    if (lid < {KC}u) {{
      let j = j0 + lid;
      var s = NEG;
      if (j < j_end) {{
        s = {" + ".join(f"sp[{TPK}u * lid + {t}u]" for t in range(TPK))};
{mask}
      }}
      ps[lid] = s;
    }}
    workgroupBarrier();
    var cm = NEG;
    for (var t = 0u; t < {KC}u; t++) {{ cm = max(cm, ps[t]); }}
    let mn = max(m, cm);
    let corr = select(exp(m - mn), 0.0, m <= NEG);
    workgroupBarrier();
    if (lid < {KC}u) {{ let s = ps[lid]; ps[lid] = select(0.0, exp(s - mn), s > NEG); }}
    workgroupBarrier();
    var cs = 0.0;
    for (var t = 0u; t < {KC}u; t++) {{ cs += ps[t]; }}
    l = l * corr + cs;
    m = mn;
    let cnt = min({KC}u, j_end - j0);
    for (var t = 0u; t < DPT; t++) {{
      let d = d0 + t * DW;
      if (d < Dv) {{
        var a = acc[t] * corr;
        for (var t2 = 0u; t2 < {KC // kg}u; t2++) {{  // a key past the chunk's end is read clamped, weighed 0
          let jj = kg + t2 * KG;
          let vj = ld_V(vb + min(j0 + jj, Lk - 1u) * P[21] + d * P[22]);
          a += select(0.0, ps[jj] * vj, jj < cnt);
        }}
        acc[t] = a;
      }}
    }}
    workgroupBarrier();
  }}
  if (KG > 1u) {{  // add up the key groups' sums
    for (var t = 0u; t < DPT; t++) {{
      let d = d0 + t * DW;
      if (kg > 0u && d < Dv) {{ accs[(kg - 1u) * {dpt * dw}u + d] = acc[t]; }}
    }}
    workgroupBarrier();
    for (var t = 0u; t < DPT; t++) {{
      let d = d0 + t * DW;
      if (kg == 0u && d < Dv) {{
        for (var o = 1u; o < KG; o++) {{ acc[t] += accs[(o - 1u) * {dpt * dw}u + d]; }}
      }}
    }}
  }}
{out}
}}
"""
    return src, nb


def _merge_wgsl(ydt: str, dv: int) -> str:
    """y = the splits' weighted value sums, rescaled to the common max, over their total weight."""
    y = dtype_of(ydt)
    atomic, store = element_store(y)
    return "\n".join([storage_decl(0, "Y", write=True, atomic=atomic),
                      "@group(0) @binding(1) var<storage, read> S: array<f32>;", storage_decl(2, "P")]) + \
        "\n" + WGSL_DTYPE_HELPERS + store + f"""
const NEG: f32 = -3.4028234663852886e38;
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}) {{
  let row = {GROUP_ID};
  let H = P[1]; let Lq = P[2]; let NS = P[{_NS}];
  let Dv = {dv}u;
  if (row >= P[0] * H * Lq) {{ return; }}
  let i = row % Lq;
  let h = (row / Lq) % H;
  let b = row / (Lq * H);
  let base = row * NS * (Dv + 2u);
  var mx = NEG;
  for (var s = 0u; s < NS; s++) {{ mx = max(mx, S[base + s * (Dv + 2u) + Dv]); }}
  var tot = 0.0;
  for (var s = 0u; s < NS; s++) {{
    let o = base + s * (Dv + 2u);
    tot += S[o + Dv + 1u] * exp(S[o + Dv] - mx);
  }}
  let yb = P[23] + b * P[24] + h * P[25] + i * P[26];
  for (var d = lid; d < Dv; d += {WG}u) {{
    var a = 0.0;
    for (var s = 0u; s < NS; s++) {{
      let o = base + s * (Dv + 2u);
      a += S[o + d] * exp(S[o + Dv] - mx);
    }}
    st_Y(yb + d * P[27], {y.convert("select(a / tot, 0.0, tot == 0.0)", "f32")});
  }}
}}
"""


def splits(rows: int, lk: int) -> tuple[int, int]:
    """(number of key splits, keys per split) for `rows` query rows over `lk` keys."""
    chunks = max(1, -(-lk // KC))
    want = min(chunks, max(1, -(-TARGET_GROUPS // rows)))
    per = -(-chunks // want)  # chunks per split
    return -(-chunks // per), per * KC


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
    rows = b * h * lq
    ns, span = splits(rows, lk)
    words = [b, h, lq, lk, d, dv, hk, int(causal), *_geom(q), *_geom(k), *_geom(v), *_geom(y)]
    words += _geom(mask.expand(b, h, lq, lk)) if mask is not None else [0] * 5
    rope_dt = cos.dtype if cos is not None else None
    mdt = mask.dtype if mask is not None else None
    split = ns > 1
    key = ("sdpa", q.dtype, k.dtype, v.dtype, y.dtype, mdt, rope_dt, d, dv, split)
    stream = ctx().stream
    kernel = stream.kernel(key, lambda: ("sdpa", *_wgsl(q.dtype, k.dtype, v.dtype, y.dtype, mdt, rope_dt, d, dv, split)))
    part = empty([rows * ns * (dv + 2)], torch.float32) if split else None
    binds = [binding(part if part is not None else y), binding(q), binding(k), binding(v)]
    binds += [binding(mask)] if mask is not None else []
    rope_words: list[int] = []
    if cos is not None and sin is not None:
        binds += [binding(cos), binding(sin)]
        rope_words = _geom(cos.expand(b, h, lq, d)) + _geom(sin.expand(b, h, lq, d))
    params = struct.pack(f"<{len(words)}I", *words) + struct.pack("<f", scale) + struct.pack("<2I", ns, span)
    params += struct.pack(f"<{len(rope_words)}I", *rope_words)
    stream.launch(kernel, binds, params, grid_rows(rows * ns))
    if part is not None:
        merge = stream.kernel(("sdpa_merge", y.dtype, dv), lambda: ("sdpa_merge", _merge_wgsl(y.dtype, dv), 2))
        stream.launch(merge, [binding(y), binding(part)], params, grid_rows(rows))
    return y
