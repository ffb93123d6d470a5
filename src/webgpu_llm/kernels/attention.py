"""Causal grouped-query attention over the KV cache, with an online softmax.

Decode (`attention_kernel`, one query token): the keys are split over workgroups
(flash-decoding); each workgroup takes its `chunk` keys, a key's dot product shared by
adjacent threads and the weighted sum of the values by groups of keys (AttentionSpec.wg), and
writes a partial (max, sum, weighted values) that the output projection's prologue merges
(linear.py, `attn` prologue), so the merge costs no dispatch of its own.

Prompts (`prompt_attention_kernel`): one workgroup per (query head, block of 16 query
tokens) stages each chunk of keys and values in workgroup memory once for the whole block,
instead of every query token re-reading the cache.

Options of both (AttentionSpec): a sliding window (a query sees its last `window` keys), a
soft-cap of the scores (cap * tanh(s / cap), Gemma 2) and the scores' scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..runtime.program import Kernel
from .common import Signature, Slots, kv_rows_wgsl, wgsl_reduce
from .linear import PV_HELPER, AttnShape, QkvShape, declare_pv, rope_cs


@dataclass(frozen=True)
class AttentionSpec:
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ctx: int
    chunk: int = 64  # decode: keys per split
    # decode: threads a workgroup (0: the chunk; raised to a power of two >= head_dim/4). Past
    # the chunk, a key's dot product is shared by wg/chunk adjacent threads (each a few 16-byte
    # words of it, so a warp's loads cover whole cache lines) and the weighted sum of the values
    # by wg/(head_dim/4) groups of keys: fewer loads one after another in each thread, which is
    # what a split's latency is made of
    wg: int = 0
    window: int = 0  # keys a query sees, counting back from its own position (0: all)
    softcap: float = 0.0  # scores -> softcap * tanh(scores / softcap) (0: none)
    scale: float = 0.0  # the scores' factor (0: 1/sqrt(head_dim))
    # a learned logit per head in the softmax's denominator (gpt-oss's sinks): float offset of
    # the heads' values in the layer's parameter buffer `pv` (-1: none); the prompt kernel
    # starts its running softmax there, the decode's split combine adds it
    sinks: int = -1
    kv_f16: bool = False  # the caches hold f16 pairs packed in u32s (QkvShape.kv_f16 writes them)
    # decode: splits a head at most (0: one a chunk of the context): past cap chunks of keys,
    # each split takes several (linear.split_span_wgsl), so that a long context launches cap
    # workgroups a head, not ctx / chunk mostly empty ones, and its merge reads cap partials
    cap: int = 0
    # decode: the first chunk's keys and values requested at the start, before the q/k-norm
    # prologue (qkn) and before the scores: a split of one chunk (every split up to the cap)
    # then waits for one round trip of loads, not for the prologue's, the keys' and the values'
    # one after another
    preload: bool = False

    @property
    def threads(self) -> int:
        """The decode workgroup's threads."""
        need = max(self.wg, self.chunk, self.head_dim // 4)
        return 1 << (need - 1).bit_length()

    @property
    def max_splits(self) -> int:
        return min(self.chunks, self.cap) if self.cap else self.chunks

    @property
    def chunks(self) -> int:
        """The context's chunks of keys."""
        return -(-self.ctx // self.chunk)

    @property
    def capped(self) -> bool:
        """Whether a split may span several chunks (the cap is under the context's chunks)."""
        return 0 < self.cap < self.chunks

    def span(self, pos: str) -> str:
        """WGSL of the keys a split takes at position `pos`."""
        return self.shape().span(pos)

    def shape(self, unroll: int = 1, at_once: bool = False) -> AttnShape:
        """The layout of the partials, for the kernels that merge them (`at_once`: AttnShape's)."""
        return AttnShape(self.n_heads, self.head_dim, self.chunk, self.max_splits, self.window, self.sinks,
                         unroll, self.capped, at_once)

    def score(self, raw: str) -> str:
        """WGSL of the score of a raw dot product: scaled, then soft-capped."""
        scaled = f"{raw} * {(self.scale or 1.0 / self.head_dim ** 0.5)!r}"
        if not self.softcap:
            return scaled
        return f"(tanh(clamp({scaled} / {self.softcap!r}, -15.0, 15.0)) * {self.softcap!r})"


@dataclass(frozen=True)
class QkvFold:
    """Decode attention that also does what follows the QKV projection itself, from its raw
    rows `x`: a dispatch less a layer. The one-sequence decode of per-head q/k-norm models
    (Qwen3's, Gemma 3's; norms.qk_norm_kernel otherwise): the norms (`q_off` >= 0), RoPE and
    the KV append. A batched step's decoding rows (`splits` > 0: x holds the K splits' partial
    sums of each row, row t * splits + s, as split_finish reads them): their sum, the bias
    (`bias_off` >= 0), the norms where the model has them, RoPE and the append to the row's
    pages. Offsets are floats of the layer's parameters `pv`."""

    shape: QkvShape
    rope_off: int
    eps: float = 0.0
    q_off: int = -1
    k_off: int = -1
    bias_off: int = -1
    splits: int = 0


def _kv_reader(sig: Signature, a: AttentionSpec, write: bool = False) -> tuple[Callable[[str], str], str]:
    """Binds the K|V cache; returns how to read its vec4 `i` as f32s and the WGSL that takes."""
    if not a.kv_f16:
        sig.storage("kv", "array<vec4<f32>>", write)  # K cache, then V cache
        return (lambda i: f"kv[{i}]"), ""
    # the same, two f16s a u32: as the QKV epilogue writes it (one view of the binding, which
    # the persistent decode layers need)
    sig.storage("kv", "array<u32>", write)
    fn = ("fn KV(i: u32) -> vec4<f32> {\n"
          "  return vec4<f32>(unpack2x16float(kv[2u * i]), unpack2x16float(kv[2u * i + 1u]));\n}\n")
    return (lambda i: f"KV({i})"), fn


def attention_kernel(a: AttentionSpec, subgroups: str | None = None, wg: int = 0, qkn: QkvFold | None = None,
                     slots: Slots | None = None, per_block: bool = False) -> Kernel:
    """`subgroups`: None, or the WGSL directive enabling subgroup operations (see Gpu).

    `wg`: the workgroup's threads where they must be a given number (a persistent kernel's
    stages share one workgroup size; at least a.threads), else a.threads. With more threads
    than keys, wg / chunk threads share each key's dot product.
    `qkn`: q and the new key and value come as raw rows `x` (QkvFold).
    `slots`: a batched step of one row (engine/batch.py): its sequence's cache is paged, the
    slot read from the table `rows` (its position, as for one sequence, from st.pos); with
    `per_block`, every query block of one row of a batched step's table `blocks` (first row,
    rows, slot, position; grid z: the blocks, those of more rows return), its partials at its
    slot's (slots x heads x splits)."""
    assert qkn is None or bool(qkn.splits) == per_block == (slots is not None), \
        "the fold is one sequence's (raw rows) or a batched step's blocks' (split sums)"
    d4 = a.head_dim // 4
    wg = wg or a.threads
    assert wg >= a.threads and wg & (wg - 1) == 0, "the workgroup holds a chunk's keys and a head's words"
    wide = wg > a.chunk
    mine = "lid < CH && " if wide else ""  # (a thread with a key of the chunk, wide workgroups)
    per_key = wg // a.chunk  # threads sharing a key's dot product
    groups = wg // d4  # threads (g, d4) share the weighted sum over keys
    sig = Signature().state()
    if qkn is None:
        sig.storage("q", "array<vec4<f32>>")
        kv, kv_fn = _kv_reader(sig, a)
        qv = "q[qb + {i}]"
    else:
        # the new key and value (the row's position) come from the prologue's kn and vn, not the
        # cache, which the group's first head appends them to in this same dispatch: chosen a
        # key at a time (a branch of one lane) and a value from a register (a select), so that
        # the loops' other loads need no test of their own position
        sig.storage("x", "array<f32>")
        kv, kv_fn = _kv_reader(sig, a, write=True)
        declare_pv(sig)
        qv = "qn[{i}]"
    # the cache row of the head's key j, and of its value
    krow, vrow = "(kvbase + {j})", "VOFF + (kvbase + {j}) * D4"
    if slots:
        sig.storage("blocks" if per_block else "rows", "array<vec4<u32>>" if per_block else "array<vec2<u32>>")
        kv_fn += kv_rows_wgsl(sig, a.n_kv_heads, a.ctx, slots)
        krow, vrow = "kv_row(slot, kvh, {j})", "(kv_row(slot, kvh, {j}) + V_ROWS) * D4"
    sig.storage("ml", "array<vec2<f32>>", write=True)
    sig.storage("acc", "array<vec4<f32>>", write=True)
    head = f"""  let s = wid.y;
  let t = 0u;
  let span = {a.span("st.pos")};
  let k0 = s * span;
  let k1 = min(k0 + span, st.pos + 1u);
  if (k0 >= k1) {{ return; }}"""
    if a.window:  # keys before the window: this split starts at the window, or holds none
        head = head.replace("let k0 = s * span;\n  let k1 = min(k0 + span, st.pos + 1u);",
                            f"let k0 = max(s * span, select(0u, st.pos + 1u - {a.window}u, st.pos + 1u > {a.window}u));\n"
                            "  let k1 = min(s * span + span, st.pos + 1u);")
    if per_block:  # the block's position and row; blocks of more rows are the prompt kernel's
        head = ("  let blk = blocks[wid.z];\n  if (blk.y != 1u) { return; }\n  let slot = blk.z;\n"
                + head.replace("st.pos", "blk.w").replace("let t = 0u;", "let t = blk.x;"))
    hrow = f"(slot * {a.n_heads}u + h)" if per_block else "h"  # the partials' row
    cur = "blk.w" if per_block else "st.pos"  # the row's position
    store = f"""    acc[({hrow} * {a.max_splits}u + s) * D4 + d4] = o;
    if (d4 == 0u) {{ ml[{hrow} * {a.max_splits}u + s] = vec2<f32>(m, l); }}"""
    sg = subgroups is not None
    sg_arg = ", @builtin(subgroup_size) sgs: u32" if sg else ""
    sg_val = "" if sg else "let sgs = 1u;"
    # Every loop with a load in it is unrolled: the loads of a chunk issue together instead of
    # one latency after another (decode attention is latency-bound, not bandwidth-bound).
    words = -(-d4 // per_key)  # of a key, each of its threads

    def word_at(i: int) -> str:  # this thread's i-th word of a key (clamped where the words do not divide the head)
        w = f"r + {i * per_key}u"
        return w if (i + 1) * per_key <= d4 else f"min({w}, D4 - 1u)"

    def word(i: int, key: Callable[[str], str]) -> str:  # ... and its term of the key's dot product
        w = word_at(i)
        d = f"dot({qv.format(i=w)}, {key(w)})"
        return d if (i + 1) * per_key <= d4 else f"select(0.0, {d}, r + {i * per_key}u < D4)"
    dot_sum = " + ".join(word(i, lambda w: kv(f"kr + {w}")) for i in range(words))
    pre_sum = " + ".join(word(i, lambda w, i=i: f"kpre{i}") for i in range(words))  # (AttentionSpec.preload's)
    new_sum = " + ".join(word(i, lambda w: f"kn[{w}]") for i in range(words))

    def key_dot(j: str, target: str, wrap: Callable[[str], str], pre: bool = False) -> str:
        """WGSL that sets `target` to `wrap` of key j's dot product: from the cache (`pre`: from
        the words preloaded into kpre0..), or with the fold from kn where key j is the row's new
        one (position `cur`)."""
        cached = (f"{target} = {wrap(pre_sum)};" if pre else
                  f"let kr = {krow.format(j=j)} * D4;\n        {target} = {wrap(dot_sum)};")
        if qkn is None:
            return cached
        return f"if ({j} == {cur}) {{\n        {target} = {wrap(new_sum)};\n      }} else {{\n        {cached}\n      }}"
    def score_phase(pre: bool) -> str:
        if per_key == 1:  # this thread's key, whole
            return f"""    let j = c0 + lid;
    var sc = -3.0e38;
    if ({mine}j < k1) {{
      let r = 0u;
      {key_dot("j", "sc", lambda d: a.score(f"({d})"), pre)}
    }}"""
        # PK adjacent threads a key, their partial dot products summed through workgroup memory
        return f"""    {{
      let jk = c0 + lid / PK;
      let r = lid % PK;
      var dp = 0.0;
      if (lid < CH * PK && jk < k1) {{
        {key_dot("jk", "dp", lambda d: d, pre)}
      }}
      sp[lid] = dp;
    }}
    workgroupBarrier();
    let j = c0 + lid;
    var sc = -3.0e38;
    if ({mine}j < k1) {{
      sc = {a.score("(" + " + ".join(f"sp[lid * PK + {i}u]" for i in range(per_key)) + ")")};
    }}"""
    per_g = -(-a.chunk // groups)

    def value_at(jj: str) -> str:  # this thread's word of the cached value of key c0 + jj (clamped to the chunk's)
        return kv(vrow.format(j=f"c0 + min({jj}, n - 1u)") + " + d4")

    def value(jj: str, pre: str = "") -> str:
        """The value's word of key c0 + jj (`pre`: the register it was preloaded into; with the
        fold, the new key's from vmine)."""
        cached = pre or value_at(jj)
        return cached if qkn is None else f"select({cached}, vmine, c0 + {jj} == {cur})"

    def vsum(pre: bool) -> str:
        return "\n".join(
            f"      {{ let jj = g + {groups}u * {i}u; let pj = select(0.0, ps[min(jj, CH - 1u)], jj < n); "
            f"o += pj * {value('jj', f'vpre{i}' if pre else '')}; }}"
            for i in range(per_g))

    def chunk(pre: bool) -> str:
        """One chunk of keys c0..: scores, the running softmax, the weighted values."""
        return f"""{score_phase(pre)}
    let mn = max(m, red_max(sc, lid, sgs));
    let p = select(0.0, exp(sc - mn), {mine}j < k1);
    {"if (lid < CH) { ps[lid] = p; }" if wide else "ps[lid] = p;"}
    let alpha = exp(m - mn);
    l = l * alpha + red_sum(p, lid, sgs);
    m = mn;
    o = o * alpha;
    if (g < G) {{
      let n = min(CH, k1 - c0);
{vsum(pre)}
    }}
    workgroupBarrier();"""

    def loop(first: str) -> str:  # the chunks from key `first` on
        return f"""  for (var c0 = {first}; c0 < k1; c0 += CH) {{
{chunk(False)}
  }}"""

    # a loop over the chunks; with the preload, the first chunk apart, from the words of this
    # thread's key and values requested at the start, before anything waits
    preload, chunks = "", loop("k0")
    if a.preload:
        jk, cond, r0 = ("k0 + lid", f"{mine}k0 + lid < k1", "0u") if per_key == 1 else \
            ("k0 + lid / PK", "lid < CH * PK && k0 + lid / PK < k1", "lid % PK")
        if qkn is not None:  # (the new key comes from the prologue, not the cache it appends it to)
            cond += f" && {jk} != {cur}"
        preload = ("\n  // the first chunk's keys and values, requested before the prologue and the scores\n"
                   + "".join(f"  var kpre{i} = vec4<f32>(0.0);\n" for i in range(words))
                   + "".join(f"  var vpre{i} = vec4<f32>(0.0);\n" for i in range(per_g))
                   + f"  {{\n    let r = {r0};\n    let jk = {jk};\n    if ({cond}) {{\n"
                   + f"      let kr = {krow.format(j='jk')} * D4;\n"
                   + "".join(f"      kpre{i} = {kv(f'kr + {word_at(i)}')};\n" for i in range(words))
                   + "    }\n  }\n  if (g < G) {\n    let c0 = k0;\n    let n = min(CH, k1 - k0);\n"
                   + "".join(f"    vpre{i} = {value_at(f'g + {groups * i}u')};\n" for i in range(per_g))
                   + "  }")
        chunks = f"""  {{  // the first chunk, from the preloaded words
    let c0 = k0;
{chunk(True)}
  }}
{loop("k0 + CH")}"""
    prologue = "" if qkn is None else "\n" + _fold_prologue(a, qkn, wg, cur, paged=slots is not None)
    if qkn is not None:  # the head's q and the new key and value, normed and rotated (their two sums of squares at once)
        kv_fn += PV_HELPER + "".join(f"var<workgroup> {n}: array<vec4<f32>, {d4}>;\n" for n in ("qn", "kn", "vn"))
        kv_fn += wgsl_reduce("red_sum2", "sum", wg, typ="vec2<f32>", subgroups=sg)
    body = wgsl_reduce("red_max", "max", wg, subgroups=sg) + wgsl_reduce("red_sum", "sum", wg, subgroups=sg) + kv_fn + f"""
const CH: u32 = {a.chunk}u;
const D4: u32 = {d4}u;
const VOFF: u32 = {a.n_kv_heads * a.ctx * d4}u;
const G: u32 = {groups}u;
const PK: u32 = {per_key}u;
var<workgroup> ps: array<f32, CH>;
var<workgroup> part: array<vec4<f32>, {wg}>;
{f"var<workgroup> sp: array<f32, {wg}>;" if per_key > 1 else ""}
@compute @workgroup_size({wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32{sg_arg}) {{
  {sg_val}
  let h = wid.x;
{head}
  let kvh = h / {a.n_heads // a.n_kv_heads}u;
  let kvbase = kvh * {a.ctx}u;{chr(10) + "  let slot = rows[0].y;" if slots and not per_block else ""}
  let qb = (t * {a.n_heads}u + h) * D4;
  let g = lid / D4;
  let d4 = lid % D4;{preload}{prologue}{chr(10) + "  let vmine = vn[d4];  // the new value's word of this thread" if qkn else ""}
  var m = -3.0e38;
  var l = 0.0;
  var o = vec4<f32>(0.0);
{chunks}
  part[lid] = o;
  workgroupBarrier();
  if (g == 0u) {{
    for (var gg = 1u; gg < G; gg++) {{ o += part[gg * D4 + d4]; }}
{store}
  }}
}}
"""
    fold = "" if qkn is None else "_qkv_fold" if qkn.splits else "_qk_norm"
    k = sig.kernel("attention_split" + fold + ("_preload" if a.preload else ""), body)
    return Kernel(k.name, subgroups + "\n" + k.wgsl, k.bindings) if subgroups else k


def _fold_prologue(a: AttentionSpec, n: QkvFold, wg: int, pos: str, paged: bool) -> str:
    """WGSL of the QkvFold prologue: head h's q, and its KV head's new key (both normed with
    their weights where the model has q/k norms, then rotated) and value, into qn, kn, vn; the
    group's first head of the split that holds position `pos` appends the key and value to the
    cache (one sequence's, or with `paged` the row's pages)."""
    q, d = n.shape, a.head_dim
    group = a.n_heads // a.n_kv_heads
    cols = q.q_rows + 2 * q.kv_rows

    def col(c: str) -> str:
        """QKV's output column c of this row: its raw value, or its splits' sum; and its bias."""
        v = (f"x[{c}]" if not n.splits else
             "(" + " + ".join(f"x[(t * {n.splits}u + {j}u) * {cols}u + {c}]" for j in range(n.splits)) + ")")
        return v if n.bias_off < 0 else f"({v} + pvf({n.bias_off}u + {c}))"
    normed = n.q_off >= 0
    if a.kv_f16:
        put = """    kv[2u * (kb + i)] = pack2x16float(kn[i].xy); kv[2u * (kb + i) + 1u] = pack2x16float(kn[i].zw);
    kv[2u * (vb + i)] = pack2x16float(vn[i].xy); kv[2u * (vb + i) + 1u] = pack2x16float(vn[i].zw);"""
    else:
        put = "    kv[kb + i] = kn[i];\n    kv[vb + i] = vn[i];"
    bases = (f"    let kb = kv_row(slot, kvh, {pos}) * D4;\n    let vb = (kv_row(slot, kvh, {pos}) + V_ROWS) * D4;" if paged
             else f"    let kb = (kvh * {a.ctx}u + {pos}) * D4;\n    let vb = VOFF + kb;")
    # each thread's pairs (2i, 2i+1) of q and of the new key, i = lid + j * wg: loaded with their
    # norm weights and rotation angle at once, kept in registers over the two sums' reduction
    pairs = -(-(d // 2) // wg)
    load, rotate = [], []
    for j in range(pairs):
        i = f"(lid + {j * wg}u)"
        weights = (f"""
    qw{j} = vec2<f32>(pvf({n.q_off}u + r), pvf({n.q_off}u + r + 1u));
    kw{j} = vec2<f32>(pvf({n.k_off}u + r), pvf({n.k_off}u + r + 1u));""" if normed else "")
        load.append(f"""  var qp{j} = vec2<f32>(0.0);
  var kp{j} = vec2<f32>(0.0);
  var qw{j} = vec2<f32>(1.0);
  var kw{j} = vec2<f32>(1.0);
  var cs{j} = vec2<f32>(1.0, 0.0);
  if ({i} < {d // 2}u) {{
    let r = 2u * {i};
    qp{j} = vec2<f32>({col(f"h * {d}u + r")}, {col(f"h * {d}u + r + 1u")});
    kp{j} = vec2<f32>({col(f"{q.q_rows}u + kvh * {d}u + r")}, {col(f"{q.q_rows}u + kvh * {d}u + r + 1u")});{weights}
    let ang = f32({pos}) * pvf({n.rope_off}u + {i});
{rope_cs(q)}
    cs{j} = vec2<f32>(c, s);
  }}""" + (f"\n  ss += vec2<f32>(dot(qp{j}, qp{j}), dot(kp{j}, kp{j}));" if normed else ""))
        rotate.append(f"""  if ({i} < {d // 2}u) {{
    let r = 2u * {i};
    let qv = qp{j} * scq * qw{j};
    let kv2 = kp{j} * sck * kw{j};
    qn[r / 4u][r % 4u] = qv.x * cs{j}.x - qv.y * cs{j}.y;
    qn[r / 4u][r % 4u + 1u] = qv.x * cs{j}.y + qv.y * cs{j}.x;
    kn[r / 4u][r % 4u] = kv2.x * cs{j}.x - kv2.y * cs{j}.y;
    kn[r / 4u][r % 4u + 1u] = kv2.x * cs{j}.y + kv2.y * cs{j}.x;
  }}""")
    nl = "\n"
    scale = (f"""  let sq = red_sum2(ss, lid, sgs);  // (q's, the key's)
  let scq = inverseSqrt(sq.x / {float(d)!r} + {n.eps!r});
  let sck = inverseSqrt(sq.y / {float(d)!r} + {n.eps!r});""" if normed else "  let scq = 1.0;\n  let sck = 1.0;")
    return f"""  // q of head h and the new key of KV head kvh{": RMSNorm over the head, then" if normed else ":"} RoPE on adjacent pairs
{"  var ss = vec2<f32>(0.0);" + nl if normed else ""}{nl.join(load)}
  for (var i = lid; i < {d}u; i += {wg}u) {{
    vn[i / 4u][i % 4u] = {col(f"{q.q_rows + q.kv_rows}u + kvh * {d}u + i")};
  }}
{scale}
{nl.join(rotate)}
  workgroupBarrier();
  if (h % {group}u == 0u && k1 == {pos} + 1u) {{
{bases}
    for (var i = lid; i < D4; i += {wg}u) {{
{put}
    }}
  }}"""


def attention_grid(a: AttentionSpec) -> tuple[int, int, int]:
    return (a.n_heads, a.max_splits, 1)


BQ, LQ = 16, 8  # query tokens per workgroup, threads per query token


def prompt_signature(a: AttentionSpec, slots: Slots | None, out: bool = True,
                     out_f16: bool = False) -> tuple[Signature, Callable[[str], str], str]:
    """The prompt attention kernels' bindings (the batched step's `blocks`, q, the cache, and
    with `out` the output: vec4s of f32, or with `out_f16` f16s) and the cache's reader (`_kv_reader`)."""
    sig = Signature().state()
    if slots:
        sig.storage("blocks", "array<vec4<u32>>")
    sig.storage("q", "array<vec4<f32>>")
    kv, kv_fn = _kv_reader(sig, a)
    if out:
        sig.storage("out", "array<f16>" if out_f16 else "array<vec4<f32>>", write=True)
    return sig, kv, kv_fn


def online_softmax_wgsl(seen: str, o_scale: str, o_add: str) -> str:
    """WGSL of a query block's online-softmax step over a chunk of CH keys whose scores are in
    `ps` (query qi's row): the running maximum `m` and sum `lsum` rescaled to the chunk's,
    the weighted values rescaled (`o_scale`) and added (`o_add`, with `p` the key's weight;
    `seen`: whether key j counts)."""
    return f"""    workgroupBarrier();
    var cm = m;
    for (var j = 0u; j < CH; j++) {{ cm = max(cm, ps[qi * CH + j]); }}
    let alpha = exp(m - cm);
    lsum *= alpha;
    {o_scale}
    for (var j = 0u; j < CH; j++) {{
      let p = select(0.0, exp(ps[qi * CH + j] - cm), {seen});
      lsum += p;
      {o_add}
    }}
    m = cm;"""


def prompt_attention_kernel(a: AttentionSpec, slots: Slots | None = None, skip_single: bool = False,
                            pack: bool = True) -> Kernel:
    """st.n query tokens at positions st.pos.. (q rows t * n_heads + h); grid = prompt_attention_grid.
    With `slots` (a batched step) the query blocks come from the table `blocks`: (first row,
    rows, slot, position of the first row), each block's rows consecutive positions of one
    sequence; grid = (n_heads, blocks). Workgroup x = (KV head, part p) then takes queries
    16p.. of the block's (head of the KV head's group, row) pairs: a block of 16 rows one head
    each, as for one sequence; a decode row (a block of one) all the heads that share its KV
    head in one workgroup, which reads their keys and values once (the other parts return).
    `skip_single`: blocks of one row are left to the split-K kernel (attention_kernel per_block).
    `pack` off (Tuning.pack_heads): a workgroup a head for every block, as for one sequence.

    Thread (query qi, lane l) scores keys l, l+8, .. of each chunk, then every lane of a query
    reads the chunk's scores and accumulates its share (vec4s l, l+8, ..) of the output.
    Heads wider than 128 (Gemma's 256) take chunks of 8 keys and read q where they use it
    instead of staging the block's q (which alone would fill 16 KiB of workgroup memory).
    """
    d4 = a.head_dim // 4
    ch = 32 if d4 <= 16 else 16  # keys per chunk: K and V chunks of 8 KiB each
    wide = d4 > 32
    if wide:
        ch = LQ
    no = -(-d4 // LQ)  # output vec4s per lane
    sig, kv, kv_fn = prompt_signature(a, slots)
    m0, l0 = "-3.0e38", "0.0"
    if a.sinks >= 0:  # the sink as a key of score `sink` and no value: exp(sink - m) in the sum
        sig.storage("pv", "array<vec4<f32>>")
        m0, l0 = f"pv[({a.sinks}u + h) >> 2u][({a.sinks}u + h) & 3u]", "1.0"
    scores = []
    # the keys a query sees: up to its own, and with a window its last `window`
    seen = "c0 + j <= last" if not a.window else f"c0 + j <= last && c0 + j + {a.window}u > last"
    score = "(s4.x + s4.y + s4.z + s4.w) * SCALE"
    if a.softcap:
        score = f"(tanh(clamp({score} / {a.softcap!r}, -15.0, 15.0)) * {a.softcap!r})"
    qget = "q[qrow + {d}u]" if wide else "qs[qi * D4 + {d}u]"
    group = a.n_heads // a.n_kv_heads
    for r in range(ch // LQ):
        dots = " + ".join(f"{qget.format(d=d)} * ks[j * KS + {d}u]" for d in range(d4))
        scores.append(f"""    {{ let j = l + {LQ * r}u;
      let s4 = {dots};
      ps[qi * CH + j] = select(-3.0e38, {score}, {seen}); }}""")
    o_decl = "\n".join(f"  var o{n} = vec4<f32>(0.0);" for n in range(no))
    o_scale = " ".join(f"o{n} *= alpha;" for n in range(no))
    o_add = " ".join(f"o{n} += p * vs[j * D4 + min(l + {LQ * n}u, D4 - 1u)];" for n in range(no))
    o_store = "\n".join(f"    if (l + {LQ * n}u < D4) {{ out[(t * {a.n_heads}u + h) * D4 + l + {LQ * n}u] = o{n} / lsum; }}"
                         for n in range(no))
    mine = "qi < nq"
    kv_rows = kv_rows_wgsl(sig, a.n_kv_heads, a.ctx, slots)
    kvh = f"let kvh = h / {a.n_heads // a.n_kv_heads}u;"
    packed = slots is not None and pack
    if slots and not pack:  # a head a workgroup
        block = "  let blk = blocks[wid.y];\n  let t0 = blk.x;\n"
        extent = (f"  let nq = blk.y;\n  let slot = blk.z;\n  {kvh}"
                  + ("\n  if (nq == 1u) { return; }" if skip_single else ""))
        keys = "  let kend = blk.w + nq;  // keys the block needs\n  let last = blk.w + qi;  // the last key this query sees"
        first = "blk.w"
    elif slots:  # queries: (head g of KV head kvh's group, row r) pairs
        block = "  let blk = blocks[wid.y];\n  let t0 = blk.x;\n"
        extent = f"""  let nq = blk.y;
  let slot = blk.z;
  let kvh = wid.x / {group}u;
  let part = wid.x % {group}u;
  if (part * BQ >= {group}u * nq{" || nq == 1u" if skip_single else ""}) {{ return; }}  // (no queries left for this part)
  let qq = part * BQ + qi;
  let h = kvh * {group}u + min(qq / nq, {group - 1}u);
  let r = qq % nq;
  let t = t0 + r;"""
        keys = "  let kend = blk.w + nq;  // keys the block needs\n  let last = blk.w + r;  // the last key this query sees"
        first = "blk.w"
        mine = f"qq < {group}u * nq"
    else:
        block = "  let t0 = wid.y * BQ;\n"
        extent = f"  let nq = min(BQ, st.n - t0);\n  let slot = 0u;\n  {kvh}"
        keys = "  let kend = st.pos + t0 + nq;  // keys the block needs\n  let last = st.pos + t;  // the last key this query sees"
        first = "(st.pos + t0)"
    kstart = "0u"
    if a.window:  # the first key the block's first query sees
        keys += f"\n  let kstart = select(0u, {first} + 1u - {a.window}u, {first} + 1u > {a.window}u);"
        kstart = "kstart"
    stage_q = f"""  for (var i = lid; i < BQ * D4; i += {BQ * LQ}u) {{
    let r = i / D4;
    qs[i] = select(vec4<f32>(0.0), q[((t0 + min(r, nq - 1u)) * {a.n_heads}u + h) * D4 + i % D4], r < nq);
  }}"""
    if wide:
        stage_q = f"  let qrow = ((t0 + min(qi, nq - 1u)) * {a.n_heads}u + h) * D4;"
    if packed:  # query i / D4's (head, row), as above
        stage_q = f"""  for (var i = lid; i < BQ * D4; i += {BQ * LQ}u) {{
    let qi2 = part * BQ + i / D4;
    let h2 = kvh * {group}u + min(qi2 / nq, {group - 1}u);
    qs[i] = select(vec4<f32>(0.0), q[((t0 + qi2 % nq) * {a.n_heads}u + h2) * D4 + i % D4], qi2 < {group}u * nq);
  }}"""
        if wide:
            stage_q = f"  let qrow = (t * {a.n_heads}u + h) * D4;"
    nl = "\n"
    body = kv_fn + kv_rows + f"""
const BQ: u32 = {BQ}u;
const LQ: u32 = {LQ}u;
const CH: u32 = {ch}u;
const D4: u32 = {d4}u;
const KS: u32 = {d4 + 1}u;  // padded row: the lanes of a query read different keys
const SCALE: f32 = {(a.scale or 1.0 / a.head_dim ** 0.5)!r};
{"" if wide else f"var<workgroup> qs: array<vec4<f32>, {BQ * d4}>;"}
var<workgroup> ks: array<vec4<f32>, {ch * (d4 + 1)}>;
var<workgroup> vs: array<vec4<f32>, {ch * d4}>;
var<workgroup> ps: array<f32, {BQ * ch}>;
@compute @workgroup_size({BQ * LQ})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
{"" if packed else "  let h = wid.x;" + nl}{block}  let qi = lid / LQ;
  let l = lid % LQ;
{"" if packed else "  let t = t0 + qi;" + nl}{extent}
{stage_q}
{keys}
  var m = {m0};
  var lsum = {l0};
{o_decl}
  for (var c0 = {kstart}; c0 < kend; c0 += CH) {{
    workgroupBarrier();  // the previous chunk is consumed
    for (var i = lid; i < CH * D4; i += {BQ * LQ}u) {{
      let j = i / D4;
      let kr = kv_row(slot, kvh, min(c0 + j, kend - 1u));
      ks[j * KS + i % D4] = {kv('kr * D4 + i % D4')};
      vs[i] = {kv('(kr + V_ROWS) * D4 + i % D4')};
    }}
    workgroupBarrier();
{nl.join(scores)}
{online_softmax_wgsl(seen, o_scale, o_add)}
  }}
  if ({mine}) {{
{o_store}
  }}
}}
"""
    return sig.kernel("attention_prompt", body)


def prompt_attention_grid(a: AttentionSpec):
    return lambda n: (a.n_heads, -(-n // BQ), 1)
