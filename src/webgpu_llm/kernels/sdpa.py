"""Scaled dot-product attention with online softmax, split over keys for short queries.

A workgroup takes one query row and a span of its keys, in chunks of KC keys: TPK threads
share each key's dot product (short load chains), the chunk's scores go through workgroup
memory, and the weighted sum of values has each thread own one output dimension for a share
of the chunk's keys. When there are few query rows (decode: one per head) the keys are split
over several workgroups so that the GPU is busy; each writes its (max, sum, weighted values)
and a second launch merges them (flash-decoding), or the output projection does as it reads
its input (`staged_merge_wgsl`, kernels/fused_linear.py). Grouped-query attention
reads the key/value head h * Hk / H; masks (additive or boolean) broadcast through zero
strides. The query may be rotated (RoPE) as it is loaded, which saves the compiler a launch.

For one new token (decode) with split keys, the two launches can also append that token's key
(rotated) and value to a static cache (`append`), so the cache write needs no launch of its
own: the split that holds the new position takes that key and value from the new token rather
than from the cache, and the merge (or the projection merging) writes them into the cache.
(Writing from the attention launch itself measured slower: a cache bound writable loses the
read-only load path.)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.program import Kernel
from .common import Signature
from .dtypes import WGSL_DTYPE_HELPERS, DType, dtype, element_store, loader
from .strided import GROUP_ID, MAIN_ARGS, words

WG = 128  # threads per workgroup
TPK = 4  # threads per key for the scores: short load chains
KC = WG // TPK  # keys per chunk
MAX_D = 512
TARGET_GROUPS = 1024  # split keys until about this many workgroups run (or one chunk each)

# Parameter words: 0 B, 1 H, 2 Lq, 3 Lk, 4 D, 5 Dv, 6 Hk, 7 causal,
# 8.. q (off, sb, sh, si, sd), 13.. k (off, sb, sh, sj, sd), 18.. v, 23.. y, 28.. mask (off, sb, sh, si, sj),
# 33 scale (f32), 34 splits, 35 keys per split, 36.. cos (off, sb, sh, si, sd), 41.. sin,
# 46.. new key (off, sb, sh, si, sd), 51.. new value, 56 offset of the new position
_Q, _K, _V, _Y, _M, _NS, _SPAN, _COS, _SIN, _KN, _VN, _IX = 8, 13, 18, 23, 28, 34, 35, 36, 41, 46, 51, 56


def _rotated(load: str, e: str, cos: str, sin: str) -> str:
    """WGSL: element e of x * cos + rotate_half(x) * sin (transformers' RoPE), where `load` is a
    WGSL expression of x's element `{}` and rotate_half pairs e with e +- D/2."""
    partner = f"select({e} - D / 2u, {e} + D / 2u, {e} < D / 2u)"
    return (f"({load.format(e)} * ld_COS({cos}) + select(1.0, -1.0, {e} < D / 2u) * "
            f"{load.format(partner)} * ld_SIN({sin}))")


def _dim_lanes(dv: int) -> int:
    """Threads per output row in the value sum: 64 or 128 (the rest take other keys)."""
    return 64 if dv <= 64 else 128


@dataclass(frozen=True)
class SdpaSpec:
    """Attention of dtypes q, k, v into y (mask, rope: the mask's and cos/sin's dtypes, or None)
    for head sizes d, dv. `split` writes per-split partials instead of y; `append` (dtypes of
    the new key, value and position): the key and value at the new position come from the new
    token, not from the cache (which the merge launch writes). `subgroups`: the WGSL enable
    line, or None."""

    q: str
    k: str
    v: str
    y: str
    mask: str | None
    rope: str | None
    d: int
    dv: int
    split: bool
    append: tuple[str, str, str] | None = None
    subgroups: str | None = None
    wg: int = WG
    tpk: int = TPK

    @property
    def kc(self) -> int:
        """Keys per chunk."""
        return self.wg // self.tpk


def sdpa_kernel(spec: SdpaSpec) -> Kernel:
    """The attention kernel; grid: grid_rows(query rows * splits).

    The head sizes are constants so that the driver's compiler unrolls the per-thread loops
    and issues their loads together (with runtime bounds each load waited for the last).
    Decode attention is latency-bound: what a thread will need of a chunk (its share of a
    key's dimensions, its values, its key's mask, and the new token's key and value) is
    requested into registers before the chunk's first barrier, the first chunk's even before
    q is staged, so that one round of loads serves the chunk. `subgroups` (the WGSL enable line,
    or None): where a subgroup spans the chunk's keys, their max and sum are one subgroupMax
    and one subgroupAdd instead of every thread walking the chunk's scores."""
    WG, TPK, KC = spec.wg, spec.tpk, spec.kc  # (the WGSL below names them so)
    d, dv, split, append, subgroups = spec.d, spec.dv, spec.split, spec.append, spec.subgroups
    dw = _dim_lanes(dv)
    y = dtype(spec.y)
    atomic, store = element_store(y)
    sig = Signature()
    if split:  # the partials: f32 words
        sig.storage("Y", "array<f32>", write=True)
        store = ""
    else:
        words(sig, "Y", write=True, atomic=atomic)
    words(words(words(sig, "Q"), "K"), "V")
    loads = loader(dtype(spec.q), "Q", "f32") + loader(dtype(spec.k), "K", "f32") + loader(dtype(spec.v), "V", "f32")
    mask, mask_load = "", ""
    if spec.mask is not None:
        words(sig, "M")
        md = dtype(spec.mask)
        loads += loader(md, "M", "f32")
        mask_load = "      mval = ld_M(P[28] + b * P[29] + h * P[30] + i * P[31] + min(jn + lid, Lk - 1u) * P[32]);\n"
        mask = "        if (mval == 0.0) { s = NEG; }" if md.name == "b8" else "        s = s + mval;"
    qload = "ld_Q(qb + d * P[12])"
    if spec.rope is not None:  # q * cos + rotate_half(q) * sin, rotate_half pairs d with d +- D/2
        words(words(sig, "COS"), "SIN")
        loads += loader(dtype(spec.rope), "COS", "f32") + loader(dtype(spec.rope), "SIN", "f32")
        at = "P[{o}] + b * P[{o1}] + h * P[{o2}] + i * P[{o3}] + d * P[{o4}]"
        cs = at.format(o=_COS, o1=_COS + 1, o2=_COS + 2, o3=_COS + 3, o4=_COS + 4)
        sn = at.format(o=_SIN, o1=_SIN + 1, o2=_SIN + 2, o3=_SIN + 3, o4=_SIN + 4)
        qload = _rotated("ld_Q(qb + ({}) * P[12])", "d", cs, sn)
    kt = -(-d // TPK)  # dims per thread in a key's dot product
    kguard = "if (d < D) " if d % TPK else ""

    def key_dot(key: str) -> str:
        """This thread's share of q . key, `key` a WGSL expression of the dimension d (or of
        t, its index among this thread's dimensions)."""
        return f"""for (var t = 0u; t < {kt}u; t++) {{
          let d = lid % {TPK}u + t * {TPK}u;
          {kguard}{{ s += qs[d] * {key}; }}
        }}"""

    new_pos, new_key, not_new, new_value = "", "", "", ""
    if append is not None:
        words(words(words(sig, "KN"), "VN"), "IX")
        loads += _new_token_wgsl(append, spec.rope is not None)
        # the new token's position; the split that holds it requests the token's key (this
        # thread's dimensions of it) and value at once, with its other loads
        new_pos = f"""  let p = u32(ld_IX(P[{_IX}u]));
  var nk: array<f32, {kt}>;
  var nv: array<f32, DPT>;
  if (p >= j_begin && p < j_end) {{
    for (var t = 0u; t < {kt}u; t++) {{ nk[t] = new_key(min(lid % {TPK}u + t * {TPK}u, D - 1u), b, kh); }}
    for (var t = 0u; t < DPT; t++) {{ nv[t] = new_value(min(d0 + t * DW, Dv - 1u), b, kh); }}
  }}
"""
        new_key = f"""
        if (j == p) {{
          s = 0.0;
          {key_dot("nk[t]")}
        }}"""
        # the cache's (stale) value at p is left out of the loop, and the new one added after
        # it by the thread whose key group holds p: no load or select in the loop itself
        not_new = " && j0 + jj != p"
        new_value = """
        if (p >= j0 && p < j0 + cnt && (p - j0) % KG == kg) { a += ps[p - j0] * nv[t]; }"""
    words(sig, "P")
    kg, dpt = WG // dw, -(-dv // dw)
    vk = KC // kg  # keys of the chunk a thread weighs into each of its value dimensions
    vpre = dpt * vk <= 32  # this thread's values of the chunk fit in registers: requested first
    vload = "ld_V(vb + min(j0 + jj, Lk - 1u) * P[21] + d * P[22])"
    if vpre:
        v_first = f"""      for (var t = 0u; t < DPT; t++) {{
        let d = min(d0 + t * DW, Dv - 1u);
        for (var t2 = 0u; t2 < {vk}u; t2++) {{ let jj = kg + t2 * KG; vv[t * {vk}u + t2] = {vload.replace("j0", "jn")}; }}
      }}
"""
        vload = f"vv[t * {vk}u + t2]"
    else:
        v_first = ""
    # What a thread reads of the chunk starting at key jn, into registers: its key's share of
    # dimensions, then its values (where they fit) and its key's mask. The first chunk's go out
    # before q is staged (their latency overlaps q's), each next one's at the end of the chunk
    # before it.
    chunk_loads = f"""    {{
      let j = jn + lid / {TPK}u;
      if (j < j_end) {{
        let kr = kb + j * P[16];
        for (var t = 0u; t < {kt}u; t++) {{ kreg[t] = ld_K(kr + min(lid % {TPK}u + t * {TPK}u, D - 1u) * P[17]); }}
      }}
{v_first}{mask_load}    }}
"""
    chunk_regs = (f"  var kreg: array<f32, {kt}>;\n" + (f"  var vv: array<f32, {dpt * vk}>;\n" if vpre else "")
                  + ("  var mval = 0.0;\n" if spec.mask is not None else ""))
    sg = subgroups is not None
    # the chunk's max and sum: with subgroups one subgroupMax and one subgroupAdd where a
    # subgroup spans the chunk's keys (lanes past them add the identities), else every
    # thread walks the scores in workgroup memory
    walk = f"""      var cm = NEG;
      for (var t = 0u; t < {KC}u; t++) {{ cm = max(cm, ps[t]); }}
      mn = max(m, cm);"""
    walk_sum = f"""      for (var t = 0u; t < {KC}u; t++) {{ cs += ps[t]; }}"""
    if sg:
        softmax = f"""    var mn = NEG;
    var cs = 0.0;
    let by_sg = sgs >= {KC}u;
    if (by_sg) {{
      mn = max(m, subgroupMax(sv));
      let pv = select(0.0, exp(sv - mn), sv > NEG);
      cs = subgroupAdd(pv);
      if (lid < {KC}u) {{ ps[lid] = pv; }}
      if (lid == 0u) {{ stat[0] = mn; stat[1] = cs; }}
    }} else if (lid < {KC}u) {{
      ps[lid] = sv;
    }}
    workgroupBarrier();
    if (by_sg) {{
      mn = stat[0];
      cs = stat[1];
    }} else {{
{walk}
    }}
    workgroupBarrier();
    if (!by_sg) {{
      if (lid < {KC}u) {{ let s = ps[lid]; ps[lid] = select(0.0, exp(s - mn), s > NEG); }}
    }}
    workgroupBarrier();
    if (!by_sg) {{
{walk_sum}
    }}"""
    else:
        softmax = f"""    if (lid < {KC}u) {{ ps[lid] = sv; }}
    workgroupBarrier();
    var mn = NEG;
    {{
{walk}
    }}
    workgroupBarrier();
    if (lid < {KC}u) {{ let s = ps[lid]; ps[lid] = select(0.0, exp(s - mn), s > NEG); }}
    workgroupBarrier();
    var cs = 0.0;
{walk_sum}"""
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
    src = WGSL_DTYPE_HELPERS + loads + store + f"""
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
var<workgroup> stat: array<f32, 2>;
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}{", @builtin(subgroup_size) sgs: u32" if sg else ""}) {{
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
  var n = Lk;
  if (P[7] != 0u) {{ n = min(Lk, i + 1u); }}
  let j_begin = split * P[{_SPAN}];
  let j_end = min(n, j_begin + P[{_SPAN}]);
  let kb = P[13] + b * P[14] + kh * P[15];
  let vb = P[18] + b * P[19] + kh * P[20];
  let d0 = lid % DW;
  let kg = lid / DW;
{new_pos}{chunk_regs}  {{
    let jn = j_begin;
{chunk_loads}  }}
  for (var d = lid; d < D; d += {WG}u) {{ qs[d] = {qload} * scale; }}
  workgroupBarrier();
  var m = NEG;
  var l = 0.0;
  var acc: array<f32, DPT>;
  for (var j0 = j_begin; j0 < j_end; j0 += {KC}u) {{
    {{  // this thread's share of a key's dot product
      let j = j0 + lid / {TPK}u;
      var s = 0.0;
      if (j < j_end) {{
        {key_dot("kreg[t]")}{new_key}
      }}
      sp[lid] = s;
    }}
    workgroupBarrier();
    var sv = NEG;  // this thread's key's score (threads of the chunk's keys)
    if (lid < {KC}u) {{
      let j = j0 + lid;
      var s = NEG;
      if (j < j_end) {{
        s = {" + ".join(f"sp[{TPK}u * lid + {t}u]" for t in range(TPK))};
{mask}
      }}
      sv = s;
    }}
{softmax}
    let corr = select(exp(m - mn), 0.0, m <= NEG);
    l = l * corr + cs;
    m = mn;
    let cnt = min({KC}u, j_end - j0);
    for (var t = 0u; t < DPT; t++) {{
      let d = d0 + t * DW;
      if (d < Dv) {{
        var a = acc[t] * corr;
        for (var t2 = 0u; t2 < {vk}u; t2++) {{  // a key past the chunk's end is read clamped, weighed 0
          let jj = kg + t2 * KG;
          let vj = {vload};
          a += select(0.0, ps[jj] * vj, jj < cnt{not_new});
        }}{new_value}
        acc[t] = a;
      }}
    }}
    if (j0 + {KC}u < j_end) {{  // the next chunk's loads
      let jn = j0 + {KC}u;
{chunk_loads}    }}
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
    k = sig.kernel("sdpa", src)
    return Kernel(k.name, subgroups + "\n" + k.wgsl, k.bindings) if subgroups else k


def _new_token_wgsl(dts: tuple[str, str, str], rope: bool, at: int = 0) -> str:
    """Loaders of the new token, and `new_key(e, b, kh)` (rotated) and `new_value(e, b, kh)`;
    the attention's parameter words start at P[at] (another kernel's block may come first)."""
    out = (loader(dtype(dts[0]), "KN", "f32") + loader(dtype(dts[1]), "VN", "f32")
           + loader(dtype(dts[2]), "IX", "i32"))
    kn, vn, cs, sn = _KN + at, _VN + at, _COS + at, _SIN + at
    load = f"ld_KN(base + ({{}}) * P[{kn + 4}u])"
    key = load.format("e")
    if rope:  # as the query, at the token's (only) row
        at_ = "P[{o}u] + b * P[{o}u + 1u] + kh * P[{o}u + 2u] + e * P[{o}u + 4u]"
        key = _rotated(load, "e", at_.format(o=cs), at_.format(o=sn))
    return out + f"""fn new_key(e: u32, b: u32, kh: u32) -> f32 {{
  let base = P[{kn}u] + b * P[{kn + 1}u] + kh * P[{kn + 2}u];
  return {key};
}}
fn new_value(e: u32, b: u32, kh: u32) -> f32 {{
  return ld_VN(P[{vn}u] + b * P[{vn + 1}u] + kh * P[{vn + 2}u] + e * P[{vn + 4}u]);
}}
"""


def _write_row(c: DType, buf: str, n: str, value: str, base: str, wg: int = WG) -> str:
    """WGSL: the workgroup (`wg` threads) writes elements 0..n of a cache row starting at element
    `base`, whole 32-bit words at a time (two 16-bit elements each, `base` even), so no atomics
    are needed. `value` is a WGSL function of (element, b, kh)."""
    if c.per_word == 1:
        return f"    for (var e = lid; e < {n}; e += {wg}u) {{ {buf}[{base} + e] = {c.bits(f'{value}(e, b, kh)')}; }}\n"
    lo, hi = c.bits(f"{value}(2u * w, b, kh)"), c.bits(f"{value}(2u * w + 1u, b, kh)")
    return f"    for (var w = lid; w < {n} / 2u; w += {wg}u) {{ {buf}[({base}) / 2u + w] = {lo} | ({hi} << 16u); }}\n"


def append_wgsl(append: tuple[str, str, str, str, str, str | None], d: int, dv: int, at: int = 0,
                wg: int = WG) -> tuple[list[str], str, str]:
    """What a kernel needs to write the new token into the caches (`append`: dtypes of the key
    cache, value cache, new key, new value, position, and cos/sin or None), the attention's
    parameter words at P[at]: (binding names in order, helper functions, `fn write_new(b, kh)`
    storing key/value head kh of batch b at the token's position, by a workgroup of `wg`)."""
    kcd, vcd, *new, rope_dt = append
    names = ["K", "V", "KN", "VN", "IX"] + (["COS", "SIN"] if rope_dt is not None else [])
    helpers = _new_token_wgsl(tuple(new), rope_dt is not None, at)  # type: ignore[arg-type]
    if rope_dt is not None:
        helpers = loader(dtype(rope_dt), "COS", "f32") + loader(dtype(rope_dt), "SIN", "f32") + helpers
    helpers = f"const D: u32 = {d}u;\nconst Dv: u32 = {dv}u;\n" + helpers

    def p(i: int) -> str:
        return f"P[{i + at}u]"

    write = f"""fn write_new(b: u32, kh: u32, lid: u32) {{
  let p = u32(ld_IX({p(_IX)}));
  if (p >= {p(3)}) {{ return; }}
  let kb = {p(13)} + b * {p(14)} + kh * {p(15)};
  let vb = {p(18)} + b * {p(19)} + kh * {p(20)};
{_write_row(dtype(kcd), "K", "D", "new_key", f"kb + p * {p(16)}", wg)}{_write_row(dtype(vcd), "V", "Dv", "new_value", f"vb + p * {p(21)}", wg)}}}
"""
    return names, helpers, write


def merged_wgsl() -> str:
    """WGSL `fn merged(row, d, ns) -> f32`: element d of query row `row`'s attention output from
    its `ns` splits' partials in binding S (each Dv weighted sums, then the split's max and sum),
    rescaled to their common max over their total weight (Dv a constant of the kernel)."""
    return """fn merged(row: u32, d: u32, ns: u32) -> f32 {
  let base = row * ns * (Dv + 2u);
  var mx = NEG;
  for (var s = 0u; s < ns; s++) { mx = max(mx, S[base + s * (Dv + 2u) + Dv]); }
  var tot = 0.0;
  var a = 0.0;
  for (var s = 0u; s < ns; s++) {
    let o = base + s * (Dv + 2u);
    let e = exp(S[o + Dv] - mx);
    tot += S[o + Dv + 1u] * e;
    a += S[o + d] * e;
  }
  return select(a / tot, 0.0, tot == 0.0);
}
"""


def staged_merge_wgsl(heads: int, ns: int, dv: int, wg: int, store: str) -> tuple[str, str]:
    """(workgroup declarations, statements) staging one query row's whole attention output,
    `heads` heads of `dv` values merged from `ns` key splits (the partials in binding S, as
    for `merged`): element k goes to `store.format(k, value)`. The same sums as `merged`, in
    the same order, laid out for a latency-bound prologue: each thread first requests the
    values it merges, the first `heads` threads compute each head's split weights meanwhile,
    and one barrier later every thread adds its values up."""
    k, ept = heads * dv, -(-heads * dv // wg)
    decl = f"var<workgroup> mw: array<f32, {heads * ns}>;  // exp(split max - head max)\nvar<workgroup> mt: array<f32, {heads}>;\n"
    loads = "\n".join(
        f"    {{ let k = min(lid + {e * wg}u, {k - 1}u); let o = (k / Dv) * {ns * (dv + 2)}u + k % Dv;\n"
        + "".join(f"      mv[{e * ns + s}] = S[o + {s * (dv + 2)}u];\n" for s in range(ns)) + "    }"
        for e in range(ept))
    sums = "\n".join(
        f"  if (lid + {e * wg}u < {k}u) {{ let k = lid + {e * wg}u; let h = k / Dv; var a = 0.0;\n"
        + "".join(f"    a += mv[{e * ns + s}] * mw[h * {ns}u + {s}u];\n" for s in range(ns))
        + f"    {store.format('k', 'select(a / mt[h], 0.0, mt[h] == 0.0)')}\n  }}"
        for e in range(ept))
    body = f"""  var mv: array<f32, {ept * ns}>;
{loads}
  if (lid < {heads}u) {{
    let base = lid * {ns * (dv + 2)}u;
    var mx = NEG;
    for (var s = 0u; s < {ns}u; s++) {{ mx = max(mx, S[base + s * (Dv + 2u) + Dv]); }}
    var tot = 0.0;
    for (var s = 0u; s < {ns}u; s++) {{
      let o = base + s * (Dv + 2u);
      let e = exp(S[o + Dv] - mx);
      tot += S[o + Dv + 1u] * e;
      mw[lid * {ns}u + s] = e;
    }}
    mt[lid] = tot;
  }}
  workgroupBarrier();
{sums}"""
    return decl, body


@dataclass(frozen=True)
class MergeSpec:
    """y (dtype `y`) = the splits' weighted value sums (head size dv), rescaled to the common
    max, over their total weight. `append` (dtypes of the key cache, value cache, new key, new
    value, position and cos/sin or None): the first query head of each key/value head also
    writes the new token (key head size d) into the caches."""

    y: str
    dv: int
    append: tuple[str, str, str, str, str, str | None] | None = None
    d: int = 0
    wg: int = WG


def merge_kernel(spec: MergeSpec) -> Kernel:
    """Reads the attention launch's parameter block; grid: grid_rows(query rows)."""
    WG = spec.wg  # (the WGSL below names it so)
    y = dtype(spec.y)
    atomic, store = element_store(y)
    sig = words(Signature(), "Y", write=True, atomic=atomic).storage("S", "array<f32>")
    extra, write = f"const Dv: u32 = {spec.dv}u;\n", ""
    if spec.append is not None:
        names, helpers, write_fn = append_wgsl(spec.append, spec.d, spec.dv, wg=WG)
        for n in names:
            words(sig, n, write=n in ("K", "V"))
        extra = helpers + write_fn
        write = """
  if (h % (H / P[6]) == 0u && i == 0u) { write_new(b, h * P[6] / H, lid); }  // the new token, into the caches"""
    words(sig, "P")
    return sig.kernel("sdpa_merge", WGSL_DTYPE_HELPERS + store + extra + f"""
const NEG: f32 = -3.4028234663852886e38;
{merged_wgsl()}
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}) {{
  let row = {GROUP_ID};
  let H = P[1]; let Lq = P[2]; let NS = P[{_NS}];
  if (row >= P[0] * H * Lq) {{ return; }}
  let i = row % Lq;
  let h = (row / Lq) % H;
  let b = row / (Lq * H);{write}
  let yb = P[23] + b * P[24] + h * P[25] + i * P[26];
  for (var d = lid; d < Dv; d += {WG}u) {{
    st_Y(yb + d * P[27], {y.convert("merged(row, d, NS)", "f32")});
  }}
}}
""")


def splits(rows: int, lk: int, kc: int = KC, target_groups: int = TARGET_GROUPS) -> tuple[int, int]:
    """(number of key splits, keys per split) for `rows` query rows over `lk` keys in chunks of
    `kc`: keys are split until about `target_groups` workgroups run (or one chunk each)."""
    chunks = max(1, -(-lk // kc))
    want = min(chunks, max(1, -(-target_groups // rows)))
    per = -(-chunks // want)  # chunks per split
    return -(-chunks // per), per * kc
