"""Prompt attention on f16 subgroup matrices (the tensor cores, as kernels/mma.py's f16 tiles).

A workgroup takes 16 query rows (a block: the prompt's next 16, or a batched step's entry of
`blocks`) of `sg` query heads that share a KV head, one subgroup a head, so each chunk of
`ck` keys and values is staged once (as f16, in workgroup memory) for all of them. Each chunk
is two tile products: S = Q K^T (f32), scored and turned into P = exp(S - m) by the row's
two lanes, then O += P V in f32 accumulators that stay in the subgroup matrices for the whole
prompt. That needs each row's final maximum m before the first P, so the keys are walked
twice: once for the maxima (S only), once for P and O; the extra Q K^T costs less than
rescaling the accumulators through workgroup memory at every chunk would. The causal mask,
a sliding window, soft-capping, the scores' scale and per-head sinks apply as in
kernels/attention.py, whose layout of q, the KV cache (one sequence's, or paged slots) and the
output this kernel shares.

`emulate=True` computes the tile products with f32 loops over the same staged f16s and keeps
O in registers (tests on adapters without subgroup matrices).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ..runtime.program import Kernel
from .attention import AttentionSpec, prompt_signature
from .common import Signature, Slots, f16_clamped, kv_rows_wgsl
from .mma import MATRIX_HEAD

ROWS = 16  # query rows a workgroup takes (the batched step's blocks are of at most 16)
# A chunk's keys and values are loaded into registers a chunk ahead where a thread holds at most
# this many vec4s of each (AttnTiles.prefetch): every shape timed ran faster so. H100, one call,
# pp512 against 8 (where Qwen3's and Gemma 3's 16-32 staged in the loop): Qwen3-0.6B f16 / q4_0
# +11 / +12 %, Qwen3-1.7B +8 / +9 %, Gemma-3-1B +16 / +12 %, Qwen3-1.7B f16's first token of
# 2048 116.6 -> 84.7 ms; 16 instead of 32 was 0-2 % slower (Gemma q4_0 2 % faster).
PREFETCH_VEC4 = 32


@dataclass(frozen=True)
class AttnTiles:
    """Subgroups (query heads) a workgroup and keys a chunk; `splits`: a block's keys in this
    many parts, each a workgroup's, merged by prompt_attention_combine_kernel (one sequence's
    prompt: a 512-token prompt of 12 heads is otherwise ~3 warps an SM of an H100)."""

    sg: int
    ck: int
    splits: int = 1
    # a chunk's keys and values loaded a chunk ahead into registers where a thread holds at
    # most this many vec4s of each (0: never)
    prefetch: int = PREFETCH_VEC4

    def shared_bytes(self, head_dim: int) -> int:
        ds = head_dim + 8
        return 2 * (self.sg * ROWS * ds + 2 * self.ck * ds) + 6 * self.sg * ROWS * self.ck + 8 * self.sg * ROWS + 128 * self.sg


def tiles_ok(a: AttentionSpec) -> bool:
    """Heads of a multiple of 16 dimensions (the tiles' width)."""
    return a.head_dim % 16 == 0


def attn_tiles(a: AttentionSpec, shared_bytes: int) -> AttnTiles:
    """The widest shape that fits the workgroup memory: up to 4 heads of a group, 32-key chunks."""
    group = a.n_heads // a.n_kv_heads
    for sg, ck in ((4, 32), (2, 32), (4, 16), (2, 16), (1, 32), (1, 16)):
        t = AttnTiles(min(sg, group), ck)
        if t.shared_bytes(a.head_dim) <= shared_bytes:
            return t
    raise ValueError(f"heads of {a.head_dim} dimensions do not fit {shared_bytes} bytes of workgroup memory")


def prompt_attention_tiles_kernel(a: AttentionSpec, shape: AttnTiles, slots: Slots | None = None,
                                  emulate: bool = False, skip_single: bool = False, out_f16: bool = False) -> Kernel:
    """As attention.prompt_attention_kernel (same bindings, `skip_single` too: blocks of one
    row left to the split-K kernel); grid = prompt_attention_tiles_grid. With shape.splits > 1
    (one sequence only) each workgroup takes its part of the block's keys (split_keys) and
    writes its rows' unnormalized O to `pacc` and (max, sum) to `pml`, split z of (row, head)
    at (row * heads + head) * splits + z, for the combine kernel to merge into `out`.
    `out_f16`: `out` as f16s (clamped to their range), for an f16-tile matmul reading them."""
    assert tiles_ok(a)
    assert shape.splits == 1 or slots is None, "key splits are one sequence's prompt's"
    assert shape.splits == 1 or not out_f16
    d, sg, ck = a.head_dim, shape.sg, shape.ck
    d4, dt_n, kt_n = d // 4, d // 16, ck // 16
    group = a.n_heads // a.n_kv_heads
    parts = -(-group // sg)  # workgroups a KV head's group of query heads takes
    sig, kv, kv_fn = prompt_signature(a, slots, out=shape.splits == 1, out_f16=out_f16)
    kv_rows = kv_rows_wgsl(sig, a.n_kv_heads, a.ctx, slots)
    sink = ""
    if a.sinks >= 0:
        sig.storage("pv", "array<vec4<f32>>")
        sink = f"pv[({a.sinks}u + h) >> 2u][({a.sinks}u + h) & 3u]"
    if slots:
        block = "  let blk = blocks[wid.y];\n  let t0 = blk.x;\n  let nq = blk.y;\n  let slot = blk.z;\n  let p0 = blk.w;"
        if skip_single:
            block += "\n  if (nq == 1u) { return; }"
    else:
        block = f"  let t0 = wid.y * {ROWS}u;\n  let nq = min({ROWS}u, st.n - t0);\n  let slot = 0u;\n  let p0 = st.pos + t0;"
    splits = shape.splits
    keys = f"  let kend = p0 + nq;\n  let kstart = {_first_key(a)};"
    if splits > 1:
        sig.storage("pacc", "array<vec4<f32>>", write=True)
        sig.storage("pml", "array<vec2<f32>>", write=True)
        keys = ("  let ks = split_keys(p0, nq, wid.z);\n  let kstart = ks.x;\n  let kend = ks.y;\n"
                "  if (kstart >= kend) { return; }")
    seen = "key <= qp" + (f" && key + {a.window}u > qp" if a.window else "")
    score = a.score("ss[sb + r * CK + j]")
    if emulate:  # loops from `z` (0, unknown to the compiler): llvmpipe would unroll them all, slowly
        s_tiles = """    for (var e = lane; e < 16u * CK; e += 32u) {
      let qa = (s * 16u + e / CK) * DS;
      let ka = (e % CK) * DS;
      var acc = 0.0;
      for (var i = z; i < D; i++) { acc += f32(qs[qa + i]) * f32(kvs[ka + i]); }
      ss[sb + e] = acc;
    }"""
        o_decl = f"  var o: array<f32, {dt_n * 8}>;"
        o_tiles = """    for (var v = z; v < DT * 8u; v++) {
      let e = lane + 32u * (v % 8u);
      let col = (v / 8u) * 16u + e % 16u;
      var acc = 0.0;
      for (var k = z; k < CK; k++) { acc += f32(ps[sb + (e / 16u) * CK + k]) * f32(kvs[VS + k * DS + col]); }
      o[v] += acc;
    }"""

        def o_store(n: int) -> str:
            return f"    for (var v = 0u; v < 8u; v++) {{ ss[sb + lane + 32u * v] = o[{n * 8}u + v]; }}"
    else:
        lines = []
        for j in range(kt_n):
            lines.append("    {\n      var acc = subgroup_matrix_result<f32, 16, 16>();")
            for t in range(dt_n):
                lines.append(f"      acc = subgroupMatrixMultiplyAccumulate("
                             f"subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&qs, s * 16u * DS + {16 * t}u, false, DS), "
                             f"subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&kvs, {16 * j}u * DS + {16 * t}u, true, DS), acc);")
            lines.append(f"      subgroupMatrixStore(&ss, sb + {16 * j}u, acc, false, CK);\n    }}")
        s_tiles = "\n".join(lines)
        o_decl = "\n".join(f"  var o{t} = subgroup_matrix_result<f32, 16, 16>();" for t in range(dt_n))
        lines = []
        for k in range(kt_n):
            lines.append(f"    {{\n      let pk = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&ps, sb + {16 * k}u, false, CK);")
            for t in range(dt_n):
                lines.append(f"      o{t} = subgroupMatrixMultiplyAccumulate(pk, subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>"
                             f"(&kvs, VS + {16 * k}u * DS + {16 * t}u, false, DS), o{t});")
            lines.append("    }")
        o_tiles = "\n".join(lines)

        def o_store(n: int) -> str:
            return f"    subgroupMatrixStore(&ss, sb, o{n}, false, 16u);"
    def store_o(n: int) -> str:
        """Element e of O's tile n, normalized into `out`, or (key splits) unnormalized into pacc."""
        if splits == 1:
            return (f"        let ti = ((t0 + r) * {a.n_heads}u + h) * D + {16 * n}u + e % 16u;\n"
                    "        outf[ti] = ss[sb + e] / ml[s * 16u + r].y;")
        return (f"        let ti = (((t0 + r) * {a.n_heads}u + h) * {splits}u + wid.z) * D + {16 * n}u + e % 16u;\n"
                "        pacc[ti / 4u][ti % 4u] = ss[sb + e];")

    outs = "\n".join(f"""  {{
{o_store(n)}
    workgroupBarrier();
    for (var v = 0u; v < 8u; v++) {{  // row e / 16, dimension {16 * n} + e % 16
      let e = lane + 32u * v;
      let r = e / 16u;
      if (ok && r < nq) {{
{store_o(n)}
      }}
    }}
    workgroupBarrier();
  }}""" for n in range(dt_n))

    ni = -(-ck * d4 // (32 * sg))  # vec4s of a chunk's keys (and values) each thread stages
    guard = ck * d4 % (32 * sg) != 0

    def each_vec4(code: Callable[[int], str]) -> str:
        """`code(n)` for each of this thread's vec4s of a chunk (vec4 i of the chunk's keys)."""
        lines = []
        for n in range(ni):
            c = code(n)
            lines.append(f"    {{ let i = lid + {n}u * WG; " + (f"if (i < CK * D4) {{ {c} }}" if guard else c) + " }")
        return "\n".join(lines)

    prefetch = ni <= shape.prefetch

    def fetch(with_v: bool, c0: str) -> str:
        """Load this thread's part of the chunk at key c0 into registers (past the keys: the last)."""
        if not prefetch:
            return ""
        return each_vec4(lambda n: f"let kr = kv_row(slot, kvh, min({c0} + i / D4, kend - 1u)); "
                         f"kreg[{n}] = {kv('kr * D4 + i % D4')};"
                         + (f" vreg[{n}] = {kv('(kr + V_ROWS) * D4 + i % D4')};" if with_v else ""))

    def stage(with_v: bool) -> str:
        """The registers' chunk into workgroup memory (without the prefetch: loaded here)."""
        if not prefetch:
            v = f"\n      put(VS + j * DS + (i % D4) * 4u, {kv('(kr + V_ROWS) * D4 + i % D4')});" if with_v else ""
            return f"""    for (var i = lid; i < CK * D4; i += WG) {{
      let j = i / D4;
      let kr = kv_row(slot, kvh, min(c0 + j, kend - 1u));
      put(j * DS + (i % D4) * 4u, {kv('kr * D4 + i % D4')});{v}
    }}"""
        return each_vec4(lambda n: f"put((i / D4) * DS + (i % D4) * 4u, kreg[{n}]);"
                         + (f" put(VS + (i / D4) * DS + (i % D4) * 4u, vreg[{n}]);" if with_v else ""))

    def walk(with_v: bool, per_key: str, after: str = "") -> str:
        """A pass over the chunks of keys: each staged and scored on the tiles, then `per_key`
        run for each key of the chunk (`r`, `qp`, `j`, `key`), then `after`. Two lanes a row
        take half the keys each, in an order skewed by the row so that the 32 lanes read 32
        banks of the scores (one lane a row, in key order, read one bank 16 times). The next
        chunk's loads are in flight while a chunk is multiplied and scored (AttnTiles.prefetch)."""
        return f"""{fetch(with_v, "kstart")}
  for (var c0 = kstart; c0 < kend; c0 += CK) {{
    workgroupBarrier();
{stage(with_v)}
    workgroupBarrier();
{fetch(with_v, "c0 + CK")}
{s_tiles}
    workgroupBarrier();
    {{
      let r = lane % 16u;
      let qp = p0 + min(r, nq - 1u);
      for (var jj = 0u; jj < CK / 2u; jj++) {{
        let j = (jj + r + (lane / 16u) * (CK / 2u)) % CK;
        let key = c0 + j;
{per_key}
      }}
    }}{after}
  }}"""

    maxima = walk(False, f"        if ({seen}) {{ m = max(m, {score}); }}")
    products = walk(True, f"""        let p = select(0.0, exp({score} - m), {seen});
        l += p;
        ps[sb + r * CK + j] = f16(p);""", "\n    workgroupBarrier();\n" + o_tiles)
    ml_store = ""
    if splits > 1:
        ml_store = f"""
  if (ok && lane < nq) {{ pml[((t0 + lane) * {a.n_heads}u + h) * {splits}u + wid.z] = ml[s * 16u + lane]; }}"""
    sg_param = "" if emulate else ", @builtin(subgroup_id) sgid: u32"
    body = kv_fn + kv_rows + (split_keys_wgsl(a, ck, splits) if splits > 1 else "") + f"""
const D: u32 = {d}u;
const D4: u32 = {d4}u;
const DS: u32 = {d + 8}u;  // f16s a staged row takes (8 against bank conflicts)
const CK: u32 = {ck}u;
const DT: u32 = {dt_n}u;
const WG: u32 = {32 * sg}u;
const VS: u32 = {ck * (d + 8)}u;  // the V rows' start in kvs
const HMAX = vec4<f32>(65504.0);
var<workgroup> qs: array<f16, {sg * ROWS * (d + 8)}>;  // [head][row][D]
var<workgroup> kvs: array<f16, {2 * ck * (d + 8)}>;  // the chunk's keys [key][D], then its values
var<workgroup> ss: array<f32, {sg * ROWS * ck}>;  // each head's scores [row][key] (at the end, an O tile)
var<workgroup> ps: array<f16, {sg * ROWS * ck}>;  // each head's exp(score - m) [row][key]
var<workgroup> ml: array<vec2<f32>, {sg * ROWS}>;  // each head's rows' (max, sum)
var<workgroup> pairs: array<f32, {sg * 32}>;  // each lane's maximum or sum of its half of the keys
fn put(o: u32, v: vec4<f32>) {{
  let hv = vec4<f16>(clamp(v, -HMAX, HMAX));
  kvs[o] = hv.x; kvs[o + 1u] = hv.y; kvs[o + 2u] = hv.z; kvs[o + 3u] = hv.w;
}}
@compute @workgroup_size({32 * sg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32{sg_param}) {{
  let kvh = wid.x / {parts}u;
{block}
{keys}
  // this thread's head: subgroup s of part wid.x % parts of the group (past the group: the
  // last head, its output not stored)
  let s = {"lid / 32u" if emulate else "sgid"};
  let lane = lid % 32u;
  let z = lid / {32 * sg}u;  // 0
  let gi = (wid.x % {parts}u) * {sg}u + s;
  let ok = gi < {group}u;
  let h = kvh * {group}u + min(gi, {group - 1}u);
  let sb = s * {ROWS * ck}u;
  for (var i = lid; i < {sg * ROWS}u * D4; i += WG) {{
    let hs = i / ({ROWS}u * D4);
    let r = (i / D4) % {ROWS}u;
    let hq = kvh * {group}u + min((wid.x % {parts}u) * {sg}u + hs, {group - 1}u);
    let v = vec4<f16>(clamp(q[((t0 + min(r, nq - 1u)) * {a.n_heads}u + hq) * D4 + i % D4], -HMAX, HMAX));
    let o = (hs * {ROWS}u + r) * DS + (i % D4) * 4u;
    qs[o] = v.x; qs[o + 1u] = v.y; qs[o + 2u] = v.z; qs[o + 3u] = v.w;
  }}
{f"  var kreg: array<vec4<f32>, {ni}>;{chr(10)}  var vreg: array<vec4<f32>, {ni}>;{chr(10)}" if prefetch else ""}  var m = {sink or "-3.0e38"};
  // the rows' maxima
{maxima}
  // each row's two lanes: the maximum of both halves, then the sum of both
  pairs[s * 32u + lane] = m;
  workgroupBarrier();
  m = max(m, pairs[s * 32u + (lane ^ 16u)]);
  var l = {f"select(0.0, exp({sink} - m), lane < 16u{' && wid.z == 0u' if splits > 1 else ''})" if sink else "0.0"};
{o_decl}
{products}
  pairs[s * 32u + lane] = l;
  workgroupBarrier();
  if (lane < 16u) {{ ml[s * 16u + lane] = vec2<f32>(m, l + pairs[s * 32u + lane + 16u]); }}
  workgroupBarrier();{ml_store}
{outs}
}}
"""
    if out_f16:
        body = re.sub(r"outf\[ti\] = (.*);", lambda m: f"out[ti] = f16({f16_clamped(m[1])});", body)
    body = body.replace("outf[ti]", "out[ti / 4u][ti % 4u]")
    k = sig.kernel(f"attention_prompt_tiles{'_f16out' if out_f16 else ''}{'_emulated' if emulate else ''}", body)
    return Kernel(k.name, "enable f16;\n" + ("" if emulate else MATRIX_HEAD) + k.wgsl, k.bindings)


def prompt_attention_tiles_grid(a: AttentionSpec, shape: AttnTiles):
    """Of the token count n (one sequence's prompt); a batched step's grid is (x, blocks)."""
    x = a.n_kv_heads * -(-(a.n_heads // a.n_kv_heads) // shape.sg)
    return lambda n: (x, -(-n // ROWS), shape.splits)


def _first_key(a: AttentionSpec) -> str:
    """WGSL of the first key a block's first query (position p0) sees: 0, or its window's start."""
    return f"select(0u, p0 + 1u - {a.window}u, p0 + 1u > {a.window}u)" if a.window else "0u"


def split_keys_wgsl(a: AttentionSpec, ck: int, splits: int) -> str:
    """`fn split_keys(p0, nq, z) -> vec2<u32>`: the keys [x, y) of part z of the block of nq
    queries from position p0 (parts of whole chunks; those past the block's keys are empty)."""
    return f"""fn split_keys(p0: u32, nq: u32, z: u32) -> vec2<u32> {{
  let kend = p0 + nq;
  let kstart = {_first_key(a)};
  let per = ((kend - kstart + {splits - 1}u) / {splits}u + {ck - 1}u) / {ck}u * {ck}u;
  let k0 = kstart + z * per;
  return vec2<u32>(k0, min(kend, k0 + per));
}}
"""


def prompt_attention_combine_kernel(a: AttentionSpec, shape: AttnTiles) -> Kernel:
    """The key splits' partials of the tiles kernel (shape.splits > 1) merged into `out`: each
    (row, head)'s O rescaled to the largest of its splits' maxima; grid =
    prompt_attention_combine_grid."""
    assert shape.splits > 1
    d4, heads, splits = a.head_dim // 4, a.n_heads, shape.splits
    sig = Signature().state()
    sig.storage("pacc", "array<vec4<f32>>")
    sig.storage("pml", "array<vec2<f32>>")
    sig.storage("out", "array<vec4<f32>>", write=True)
    body = split_keys_wgsl(a, shape.ck, splits) + f"""
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
  let i = gid.x;  // (row t x heads + head) x {d4} + vec4 d4 of the head's output
  if (i >= st.n * {heads * d4}u) {{ return; }}
  let th = i / {d4}u;
  let t0 = th / {heads}u / {ROWS}u * {ROWS}u;  // the row's block
  let p0 = st.pos + t0;
  let nq = min({ROWS}u, st.n - t0);
  var m = -3.0e38;
  for (var z = 0u; z < {splits}u; z++) {{
    let ks = split_keys(p0, nq, z);
    if (ks.x < ks.y) {{ m = max(m, pml[th * {splits}u + z].x); }}
  }}
  var l = 0.0;
  var o = vec4<f32>(0.0);
  for (var z = 0u; z < {splits}u; z++) {{
    let ks = split_keys(p0, nq, z);
    if (ks.x < ks.y) {{
      let ml = pml[th * {splits}u + z];
      let w = exp(ml.x - m);
      l += ml.y * w;
      o += pacc[(th * {splits}u + z) * {d4}u + i % {d4}u] * w;
    }}
  }}
  out[i] = o / l;
}}
"""
    return sig.kernel("attention_prompt_tiles_combine", body)


def prompt_attention_combine_grid(a: AttentionSpec):
    return lambda n: (-(-n * a.n_heads * a.head_dim // 4 // 64), 1, 1)
