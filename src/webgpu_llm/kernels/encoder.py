"""The kernels only encoders (BERT, nomic-bert) need: bidirectional attention over a packed
batch of texts, and pooling each text's rows into one vector.

A batch of texts is *packed*: their rows follow one another (no padding), and tables say
where each text starts. The QKV projection writes rows of [q | k | v] (a plain matmul with
the `store` epilogue), and the attention reads the keys and values of a query's own text
from there: unlike a decoder's, an encoder's keys are used once, by the same batch, so they
go to no cache. Rotary embeddings (nomic-bert) are applied to q and k as they are staged in
workgroup memory, at the row's position within its text, from a table of (cos, sin) pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runtime.program import Kernel
from .attention import online_softmax_wgsl
from .common import Signature, wgsl_reduce

BQ, LQ = 16, 8  # query rows per workgroup, threads per query row (as the decoder's prompt attention)


@dataclass(frozen=True)
class Packing:
    """Texts of `lengths` tokens packed one after another; the tables the kernels read."""

    lengths: tuple[int, ...]

    @property
    def starts(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    @property
    def rows(self) -> int:
        return int(sum(self.lengths))

    @property
    def blocks(self) -> int:
        return sum(-(-n // BQ) for n in self.lengths)

    @property
    def n(self) -> tuple[int, int, int]:
        """The encoder Program's n: (rows, attention query blocks, texts)."""
        return self.rows, self.blocks, len(self.lengths)

    def row_table(self) -> np.ndarray:
        """(position within its text, text) of every row: uint32 (rows, 2)."""
        text = np.repeat(np.arange(len(self.lengths)), self.lengths)
        pos = np.arange(self.rows) - np.repeat(self.starts, self.lengths)
        return np.stack([pos, text], 1).astype(np.uint32)

    def block_table(self) -> np.ndarray:
        """(first row, rows, first row of its text, rows of its text) of every attention query
        block (at most BQ rows of one text): uint32 (blocks, 4)."""
        out = [(s + b, min(BQ, n - b), s, n) for s, n in zip(self.starts.tolist(), self.lengths)
               for b in range(0, n, BQ)]
        return np.array(out, np.uint32).reshape(-1, 4)

    def text_table(self) -> np.ndarray:
        """(first row, rows) of every text: uint32 (texts, 2)."""
        return np.stack([self.starts, np.array(self.lengths)], 1).astype(np.uint32)


@dataclass(frozen=True)
class EncoderAttentionSpec:
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope: bool = False  # rotate q and k (rows permuted at load so that RoPE partners are adjacent)

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def row(self) -> int:
        """Floats of a row of the QKV projection's output: q, then k, then v."""
        return self.q_dim + 2 * self.kv_dim


def encoder_attention_kernel(a: EncoderAttentionSpec) -> Kernel:
    """Bidirectional attention of a packed batch; grid = (n_heads, query blocks).

    `blocks[b]` = (first row, rows (at most 16), first row of its text, rows of its text): a
    block's rows are consecutive rows of one text, and attend to every row of that text.
    `qkv` holds a row of [q | k | v] per token; `out` gets a row of q_dim per token. With
    `a.rope`, `rope[pos * head_dim/4 + i]` = (cos, sin, cos, sin) of the two pairs of vec4 i
    at position pos. Thread (query qi, lane l) scores keys l, l+8, .. of each chunk, then
    accumulates its share (vec4s l, l+8, ..) of the output, with an online softmax.
    """
    assert a.head_dim % 4 == 0 and a.n_heads % a.n_kv_heads == 0
    d4 = a.head_dim // 4
    ch = 32 if d4 <= 16 else 16  # keys per chunk
    no = -(-d4 // LQ)  # output vec4s per lane
    sig = Signature()
    sig.storage("blocks", "array<vec4<u32>>")
    sig.storage("qkv", "array<vec4<f32>>")
    if a.rope:
        sig.storage("rope", "array<vec4<f32>>")
    sig.storage("out", "array<vec4<f32>>", write=True)
    rot = ("fn rot(v: vec4<f32>, pos: u32, d: u32) -> vec4<f32> {\n"
           "  let cs = rope[pos * D4 + d];\n"
           "  return vec4<f32>(v.x * cs.x - v.y * cs.y, v.x * cs.y + v.y * cs.x, "
           "v.z * cs.z - v.w * cs.w, v.z * cs.w + v.w * cs.z);\n}\n") if a.rope else \
        "fn rot(v: vec4<f32>, pos: u32, d: u32) -> vec4<f32> { return v; }\n"
    scores = []
    for r in range(ch // LQ):
        dots = " + ".join(f"qs[qi * D4 + {d}u] * ks[j * KS + {d}u]" for d in range(d4))
        scores.append(f"""    {{ let j = l + {LQ * r}u;
      let s4 = {dots};
      ps[qi * CH + j] = select(-3.0e38, (s4.x + s4.y + s4.z + s4.w) * SCALE, c0 + j < slen); }}""")
    nl = "\n"
    o_decl = "\n".join(f"  var o{n} = vec4<f32>(0.0);" for n in range(no))
    o_scale = " ".join(f"o{n} *= alpha;" for n in range(no))
    o_add = " ".join(f"o{n} += p * vs[j * D4 + min(l + {LQ * n}u, D4 - 1u)];" for n in range(no))
    o_store = "\n".join(f"    if (l + {LQ * n}u < D4) {{ out[(t * {a.n_heads}u + h) * D4 + l + {LQ * n}u] = o{n} / lsum; }}"
                         for n in range(no))
    body = rot + f"""
const BQ: u32 = {BQ}u;
const LQ: u32 = {LQ}u;
const CH: u32 = {ch}u;
const D4: u32 = {d4}u;
const KS: u32 = {d4 + 1}u;  // padded row: the lanes of a query read different keys
const R4: u32 = {a.row // 4}u;  // vec4s of a row of qkv
const KOFF: u32 = {a.q_dim // 4}u;
const VOFF: u32 = {(a.q_dim + a.kv_dim) // 4}u;
const SCALE: f32 = {1.0 / a.head_dim ** 0.5!r};
var<workgroup> qs: array<vec4<f32>, {BQ * d4}>;
var<workgroup> ks: array<vec4<f32>, {ch * (d4 + 1)}>;
var<workgroup> vs: array<vec4<f32>, {ch * d4}>;
var<workgroup> ps: array<f32, {BQ * ch}>;
@compute @workgroup_size({BQ * LQ})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let h = wid.x;
  let blk = blocks[wid.y];
  let t0 = blk.x;
  let nq = blk.y;
  let s0 = blk.z;  // the text's first row
  let slen = blk.w;  // and its rows: the keys
  let qi = lid / LQ;
  let l = lid % LQ;
  let t = t0 + qi;
  let kvh = (h / {a.n_heads // a.n_kv_heads}u) * D4;
  for (var i = lid; i < BQ * D4; i += {BQ * LQ}u) {{
    let r = i / D4;
    let row = t0 + min(r, nq - 1u);
    qs[i] = select(vec4<f32>(0.0), rot(qkv[row * R4 + h * D4 + i % D4], row - s0, i % D4), r < nq);
  }}
  var m = -3.0e38;
  var lsum = 0.0;
{o_decl}
  for (var c0 = 0u; c0 < slen; c0 += CH) {{
    workgroupBarrier();  // the previous chunk is consumed
    for (var i = lid; i < CH * D4; i += {BQ * LQ}u) {{
      let j = i / D4;
      let kp = min(c0 + j, slen - 1u);
      let row = (s0 + kp) * R4 + kvh + i % D4;
      ks[j * KS + i % D4] = rot(qkv[row + KOFF], kp, i % D4);
      vs[i] = qkv[row + VOFF];
    }}
    workgroupBarrier();
{nl.join(scores)}
{online_softmax_wgsl("c0 + j < slen", o_scale, o_add)}
  }}
  if (qi < nq) {{
{o_store}
  }}
}}
"""
    return sig.kernel("encoder_attention" + ("_rope" if a.rope else ""), body)


POOL_WG = 64
POOLING = ("mean", "cls", "last")


def pool_kernel(k: int, mode: str, normalize: bool) -> Kernel:
    """One vector per text from its rows of x (k floats a row): `seqs[s]` = (first row, rows);
    `out[s]` = the mean of the rows ("mean"), the first row ("cls", BERT's [CLS]) or the last
    ("last"), divided by its L2 norm (at least 1e-12, as torch's F.normalize) when `normalize`;
    grid = (texts,)."""
    assert mode in POOLING and k % 4 == 0
    k4, wg = k // 4, POOL_WG
    sig = Signature()
    sig.storage("seqs", "array<vec2<u32>>")
    sig.storage("x", "array<vec4<f32>>")
    sig.storage("out", "array<vec4<f32>>", write=True)
    value = {
        "mean": f"var a = vec4<f32>(0.0);\n    for (var r = 0u; r < n; r++) {{ a += x[(s0 + r) * {k4}u + i]; }}\n"
                "    a = a / f32(max(n, 1u));",
        "cls": f"let a = x[s0 * {k4}u + i];",
        "last": f"let a = x[(s0 + max(n, 1u) - 1u) * {k4}u + i];",
    }[mode]
    scale = ""
    if normalize:
        scale = f"""  let sc = 1.0 / max(sqrt(red_sum(ss, lid, 1u)), 1e-12);
  for (var i = lid; i < {k4}u; i += {wg}u) {{ out[s * {k4}u + i] *= sc; }}"""
    body = (wgsl_reduce("red_sum", "sum", wg) if normalize else "") + f"""
@compute @workgroup_size({wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let s = wid.x;
  let s0 = seqs[s].x;
  let n = seqs[s].y;
  var ss = 0.0;
  for (var i = lid; i < {k4}u; i += {wg}u) {{
    {value}
    out[s * {k4}u + i] = a;
    ss += dot(a, a);
  }}
{scale}
}}
"""
    return sig.kernel(f"pool_{mode}{'_normalized' if normalize else ''}", body)
