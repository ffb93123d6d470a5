"""A whole decode step as one persistent dispatch (workgroups looping over the stages, grid
barriers of storage atomics between them) against one dispatch per stage, with the same
generated stage code. Each dispatch costs its critical path *plus* its bytes, so removing the
boundaries is the largest decode lever measured: on an H200 this step ran 20-23 % faster on
Dawn. The engine's opt-in persistent layers came from it; the whole step is not built because
WGSL cannot order one workgroup's stores before another's reads (docs/performance.md). It is
the tool to rerun when that changes (a device-scope fence, or hand-offs through atomics).
tests/bench/test_probe_persistent.py checks every variant against numpy on llvmpipe.

The step is a Qwen2 decode's dependency chain with real matrix shapes (`--shape`; random
weights, f16 or `--dtype q8`: int8 with an f32 scale per 32): per layer QKV, attention, O, gate/up, down (SiLU * mul of gate/up as its input),
then the LM head. With `--past 0` attention stands in as a copy of q (the hand-off without
attention's work) and every mat-vec RMS-normalises its input, so values stay in range; with
`--past N` it is the model's step: QKV appends k and v to a cache of N positions, attention
runs per (head, split of 32 keys) and O merges the splits in its input, residuals are added,
and RMS comes only before QKV, gate/up and the LM head. The same generated stage code runs:

- `multi`: one dispatch per stage, as many workgroups as its rows need (the engine's
  structure, without its tuning), or `multi G=g`: g workgroups looping over the rows;
- `persistent G=g`: one dispatch of g workgroups looping over all stages, a barrier of
  storage atomics between stages; the vectors handed between stages are read with atomic
  loads (plain loads may hit stale L1 lines), or (`--plain`) with plain loads from
  a region that only its stage writes, which the memory model does not promise;
- `+prefetch`: each workgroup loads its first rows of the next stage into registers between
  arriving at the barrier and waiting on it; `+flag` (`--flag`): waiters spin on a flag the
  last arriver raises instead of on the arrival counter.

Every variant's LM-head output is checked against numpy before it is timed; a barrier that
cannot complete (workgroups not all resident) gives up after a spin limit and is reported.
The subgroup path assumes 32-lane subgroups (NVIDIA); elsewhere the check fails and nothing
is timed. Timings come after a warm-up, twice over (the GPU clocks down while the host works).

    python bench/probe_persistent_decode.py --backend dawn --plain --past 80 --out probe.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, replace

import numpy as np

from webgpu_llm.runtime.gpu import Gpu, open_gpu
from webgpu_llm.runtime.program import Kernel, Program

WG = 256  # threads per workgroup (--wg changes it: one persistent workgroup per SM can be larger)
LANES = 32  # threads per row (one subgroup on NVIDIA)
GROUPS_PER_WG = WG // LANES
MAX_ROWS = 4  # rows a thread group has in flight (one vec4 of sums)
SPIN_CAP = 1 << 18
KEYS = 32  # keys per attention split
EPS = 1e-6
LAYER_ALIGN = 256  # uniform offsets' alignment


def set_workgroup_size(n: int) -> None:
    """The kernels are generated from these module constants; the probe sets them once."""
    global WG, GROUPS_PER_WG
    WG, GROUPS_PER_WG = n, n // LANES


@dataclass(frozen=True)
class Shape:
    hidden: int = 896
    qkv: int = 1152
    inter: int = 4864
    vocab: int = 151936
    layers: int = 24
    heads: int = 14
    kv_heads: int = 2
    # 0: attention is a copy of q (the hand-off alone), RMS before every mat-vec, no residual;
    # n: the model's step: attention over n cached positions and the new one (split in 32
    # keys, merged in O's input), residual adds, RMS before QKV, gate/up and the LM head only
    past: int = 0
    dtype: str = "f16"  # or "q8": int8 weights, an f32 scale per 32 (q8_0's bytes, near enough)

    def matrix_words(self, n: int, k: int) -> int:
        """16-byte words of an n x k matrix: f16 values, or int8 values then the scales."""
        return n * k // 8 if self.dtype == "f16" else n * k // 16 + -(-n * k // 32 // 4)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_width(self) -> int:  # floats a position holds in the cache: k, then v
        return 2 * self.kv_heads * self.head_dim

    @property
    def splits(self) -> int:
        return -(-(self.past + 1) // KEYS)

    @property
    def part_width(self) -> int:  # an attention partial: max, sum, pad, pad, head_dim values
        return self.head_dim + 4


SHAPES = {"qwen2.5-0.5b": Shape(), "qwen2.5-1.5b": Shape(1536, 2048, 8960, 151936, 28, 12, 2)}


@dataclass(frozen=True)
class Stage:
    """One mat-vec (or the copy that stands for attention): n outputs from k inputs."""

    kind: str  # qkv, attn, o, gateup, down, lm
    n: int
    k: int
    rows: int  # rows per thread group per round (several loads in flight)
    w_off: int  # first weight word (vec4<u32>: 8 halves, or 16 int8) of layer 0
    in_off: int  # first input float of layer 0
    out_off: int  # first output float of layer 0
    silu_in: bool = False  # input = silu(v[:k]) * v[k:2k]
    norm: bool = True  # the input RMS-normalised
    res_off: int | None = None  # a residual added to the output (float offset in layer 0)
    merge: bool = False  # the input merged from attention partials
    kv_append: bool = False  # the k and v rows also written to the cache at position `past`
    q8: bool = False  # int8 weights (16 a word), then an f32 scale per 32 (4 a word)

    @property
    def attention(self) -> bool:
        """The model's attention (its n counts (head, split) items; the stand-in copy has k)."""
        return self.kind == "attn" and self.k == 0


def plan(s: Shape) -> tuple[list[Stage], int, int]:
    """The per-layer stages (offsets of layer 0), the weight words and floats of a layer."""
    h, q, f = s.hidden, s.qkv, s.inter
    mw = s.matrix_words
    wq, wo, wgu, wd = mw(q, h), mw(h, h), mw(2 * f, h), mw(h, f)
    layer_words = wq + wo + wgu + wd
    v0 = 0  # layer input (hidden); each layer's floats end where the next layer's input starts
    vq = v0 + _pad(h)
    if s.past:  # the model's step
        vp = vq + _pad(q)
        vo = vp + _pad(s.heads * s.splits * s.part_width)
        vg = vo + _pad(h)
        layer_floats = vg + _pad(2 * f)
        return _dtype(s, [
            Stage("qkv", q, h, 2, 0, v0, vq, kv_append=True),
            Stage("attn", s.heads * s.splits, 0, 1, 0, vq, vp),
            Stage("o", h, h, 1, wq, vp, vo, norm=False, res_off=v0, merge=True),
            Stage("gateup", 2 * f, h, 4, wq + wo, vo, vg),
            Stage("down", h, f, 1, wq + wo + wgu, vg, layer_floats, silu_in=True, norm=False, res_off=vo),
        ]), layer_words, layer_floats
    va = vq + _pad(q)
    vo = va + _pad(h)
    vg = vo + _pad(h)
    layer_floats = vg + _pad(2 * f)
    stages = [
        Stage("qkv", q, h, 2, 0, v0, vq),
        Stage("attn", h, q, 1, 0, vq, va),
        Stage("o", h, h, 1, wq, va, vo),
        Stage("gateup", 2 * f, h, 4, wq + wo, vo, vg),
        Stage("down", h, f, 1, wq + wo + wgu, vg, layer_floats, silu_in=True),
    ]
    return _dtype(s, stages), layer_words, layer_floats


def _dtype(s: Shape, stages: list[Stage]) -> list[Stage]:
    return [replace(st, q8=s.dtype == "q8" and st.kind != "attn") for st in stages]


def _pad(n: int) -> int:
    return -(-n // 64) * 64


def lm_stage(s: Shape, layer_floats: int) -> Stage:
    x = s.layers * layer_floats
    return Stage("lm", s.vocab, s.hidden, 4, 0, x, x + _pad(s.hidden), q8=s.dtype == "q8")


# -- WGSL ---------------------------------------------------------------------------------

def _header(subgroups: str | None, atomic_vec: bool, kmax: int, names: tuple[str, ...]) -> str:
    """Declarations of the bindings `names` (numbered in that order: "auto" layouts drop
    unused ones, so a kernel declares only what it uses)."""
    vec = "array<atomic<u32>>" if atomic_vec else "array<f32>"
    types = {"w": "read> w: array<vec4<u32>>", "wlm": "read> wlm: array<vec4<u32>>",
             "v": f"read_write> v: {vec}", "sync": "read_write> sync: array<atomic<u32>>",
             "kv": "read_write> kv: array<f32>"}
    decl = "\n".join(f"@group(0) @binding({i}) var<uniform> lay: vec4<u32>;" if n == "lay" else
                     f"@group(0) @binding({i}) var<storage, {types[n]};" for i, n in enumerate(names))
    return f"""{subgroups or ''}
{decl}
var<workgroup> xs: array<vec4<f32>, {kmax // 4}>;
var<workgroup> red: array<f32, {WG * MAX_ROWS}>;
"""


def _vload(atomic_vec: bool, idx: str) -> str:
    return f"bitcast<f32>(atomicLoad(&v[{idx}]))" if atomic_vec else f"v[{idx}]"


def _vstore(atomic_vec: bool, idx: str, val: str) -> str:
    return f"atomicStore(&v[{idx}], bitcast<u32>({val}));" if atomic_vec else f"v[{idx}] = {val};"


def _helpers(subgroups: str | None) -> str:
    # row sums: a subgroup sum each, or (without subgroups) all of a round's rows through
    # workgroup memory at once. Few barriers matter on llvmpipe, whose compile time grows
    # with them (each is a coroutine suspension point there).
    if subgroups is not None:
        row_sum = "fn row_sum(p: vec4<f32>, lid: u32) -> vec4<f32> { return subgroupAdd(p); }"
    else:
        row_sum = f"""
fn row_sum(p: vec4<f32>, lid: u32) -> vec4<f32> {{
  workgroupBarrier();
  for (var r = 0u; r < 4u; r++) {{ red[r * {WG}u + lid] = p[r]; }}
  workgroupBarrier();
  let base = lid - lid % {LANES}u;
  var s = vec4<f32>();
  for (var i = 0u; i < {LANES}u; i++) {{
    s += vec4<f32>(red[base + i], red[{WG}u + base + i], red[{2 * WG}u + base + i], red[{3 * WG}u + base + i]);
  }}
  return s;
}}"""
    if subgroups is not None:  # one subgroup sum, then the 8 partials: 2 barriers, not 10
        wg_sum = f"""
fn wg_sum(p: f32, lid: u32) -> f32 {{
  let s = subgroupAdd(p);
  workgroupBarrier();
  if (lid % {LANES}u == 0u) {{ red[lid / {LANES}u] = s; }}
  workgroupBarrier();
  var r = 0.0;
  for (var i = 0u; i < {GROUPS_PER_WG}u; i++) {{ r += red[i]; }}
  return r;
}}"""
    else:  # every thread adds all partials: 256 adds, but two barriers, not ten
        wg_sum = f"""
fn wg_sum(p: f32, lid: u32) -> f32 {{
  workgroupBarrier();
  red[lid] = p;
  workgroupBarrier();
  var r = 0.0;
  for (var i = 0u; i < {WG}u; i++) {{ r += red[i]; }}
  return r;
}}"""
    return row_sum + wg_sum + """
fn dot8(word: vec4<u32>, i: u32) -> f32 {
  let a = xs[2u * i];
  let b = xs[2u * i + 1u];
  let w0 = unpack2x16float(word.x);
  let w1 = unpack2x16float(word.y);
  let w2 = unpack2x16float(word.z);
  let w3 = unpack2x16float(word.w);
  return dot(vec4<f32>(w0, w1), a) + dot(vec4<f32>(w2, w3), b);
}
fn sx8(u: u32) -> vec4<f32> {  // four int8, sign-extended
  let i = bitcast<i32>(u);
  return vec4<f32>(vec4<i32>((i << 24u) >> 24u, (i << 16u) >> 24u, (i << 8u) >> 24u, i >> 24u));
}
fn dot16(word: vec4<u32>, i: u32) -> f32 {
  return dot(sx8(word.x), xs[4u * i]) + dot(sx8(word.y), xs[4u * i + 1u])
       + dot(sx8(word.z), xs[4u * i + 2u]) + dot(sx8(word.w), xs[4u * i + 3u]);
}
"""


def _words(st: Stage) -> tuple[int, int]:
    """Weight words per row, words per lane."""
    wpr = st.k // (16 if st.q8 else 8)
    return wpr, -(-wpr // LANES)


PREFETCH_WORDS = 4  # words per row a lane prefetches (registers held across the barrier)


def _prefetch_names(st: Stage) -> list[tuple[int, int]]:
    _, per_lane = _words(st)
    return [(r, i) for r in range(st.rows) for i in range(min(per_lane, PREFETCH_WORDS))]


def _row_expr(st: Stage, r: int, j: str, groups: str) -> str:
    return f"(gs * {st.rows}u + {r}u + ({j}) * {groups} * {GROUPS_PER_WG * st.rows}u)"


def _matrix(st: Stage, layer: str, skip: int = 0) -> tuple[str, str]:
    """The array holding the stage's matrix and its word `skip` words in, in layer `layer`."""
    if st.kind == "lm":
        return "wlm", f"{st.w_off + skip}u"
    return "w", f"({layer} * LAYER_WORDS + {st.w_off + skip}u)"


def _weights_ref(st: Stage, row: str, word: str, layer: str = "l") -> str:
    arr, base = _matrix(st, layer)
    wpr, _ = _words(st)
    return f"{arr}[{base} + min({row}, {st.n - 1}u) * {wpr}u + min({word}, {wpr - 1}u)]"


def _scale_ref(st: Stage, row: str, word: str) -> str:
    """The f32 scale of a q8 row's word (two words a block of 32), after the matrix's values."""
    arr, base = _matrix(st, "l", st.n * st.k // 16)
    idx = f"(min({row}, {st.n - 1}u) * {st.k // 32}u + min({word}, {st.k // 16 - 1}u) / 2u)"
    return f"bitcast<f32>({arr}[{base} + {idx} / 4u][{idx} % 4u])"


def prefetch_code(st: Stage, groups: str, layer: str) -> str:
    """Load the first round of stage `st` of layer `layer` into the pf_ registers."""
    if st.kind == "attn":
        return ""
    return "\n  ".join(f"pf_{r}_{i} = {_weights_ref(st, _row_expr(st, r, '0u', groups), f'lane + {i * LANES}u', layer)};"
                       for r, i in _prefetch_names(st))


def stage_code(st: Stage, atomic_vec: bool, groups: str, use_pf: bool) -> str:
    """One stage for workgroup `wid` (of `groups` * 8 thread groups); `l` is the layer."""
    in_base = f"(l * LAYER_FLOATS + {st.in_off}u)" if st.kind != "lm" else f"{st.in_off}u"
    out_base = f"(l * LAYER_FLOATS + {st.out_off}u)" if st.kind != "lm" else f"{st.out_off}u"
    if st.attention:
        return attention_code(st, atomic_vec, groups, in_base, out_base)
    if st.kind == "attn":  # the copy of q that stands for attention
        return f"""{{
    for (var i = wid * {WG}u + lid; i < {st.n}u; i += {groups} * {GROUPS_PER_WG}u * {LANES}u) {{
      {_vstore(atomic_vec, f'{out_base} + i', _vload(atomic_vec, f'{in_base} + i'))}
    }}
  }}"""
    wpr, per_lane = _words(st)
    k4 = st.k // 4
    if st.silu_in:
        x_load = (f"let g = {_vload(atomic_vec, f'{in_base} + i')};\n"
                  f"          let u = {_vload(atomic_vec, f'{in_base} + {st.k}u + i')};\n"
                  f"          xv[e] = g / (1.0 + exp(-g)) * u;")
    elif st.merge:  # head i / HD's partials, rescaled to their common max
        part = f"{in_base} + (i / HD * SPLITS + sp) * PW"
        x_load = f"""var mx = -1e30;
          for (var sp = 0u; sp < SPLITS; sp++) {{ mx = max(mx, {_vload(atomic_vec, part)}); }}
          var num = 0.0;
          var den = 0.0;
          for (var sp = 0u; sp < SPLITS; sp++) {{
            let cw = exp({_vload(atomic_vec, part)} - mx);
            den += cw * {_vload(atomic_vec, f'{part} + 1u')};
            num += cw * {_vload(atomic_vec, f'{part} + 4u + i % HD')};
          }}
          xv[e] = num / den;"""
    else:
        x_load = f"xv[e] = {_vload(atomic_vec, f'{in_base} + i')};"
    res_base = f"(l * LAYER_FLOATS + {st.res_off}u)" if st.res_off is not None else ""

    def one_round(j: str, pf: bool) -> str:
        lines = []
        for r in range(st.rows):
            row = _row_expr(st, r, j, groups)
            lines.append(f"let row{r} = {row};")
            for i in range(per_lane):
                word = f"lane + {i * LANES}u"
                src = f"pf_{r}_{i}" if pf and i < PREFETCH_WORDS else _weights_ref(st, f"row{r}", word)
                lines.append(f"let w{r}_{i} = {src};")
        for r in range(st.rows):
            terms = []
            for i in range(per_lane):
                word = f"lane + {i * LANES}u"
                d = (f"dot16(w{r}_{i}, min({word}, {wpr - 1}u)) * {_scale_ref(st, f'row{r}', word)}" if st.q8
                     else f"dot8(w{r}_{i}, min({word}, {wpr - 1}u))")
                if (i + 1) * LANES > wpr:  # the last words: lanes past the row add nothing
                    d = f"select(0.0, {d}, {word} < {wpr}u)"
                terms.append(d)
            lines.append(f"let p{r} = {' + '.join(terms)};")
        parts = ", ".join(f"p{r}" if r < st.rows else "0.0" for r in range(MAX_ROWS))
        lines.append(f"let sums = row_sum(vec4<f32>({parts}), lid) * scale;")
        for r in range(st.rows):
            val = f"sums[{r}]"
            if res_base:
                val = f"({val} + {_vload(atomic_vec, f'{res_base} + row{r}')})"
            lines.append(f"if (lane == 0u && row{r} < {st.n}u) {{ "
                         f"{_vstore(atomic_vec, f'{out_base} + row{r}', val)} }}")
            if st.kv_append:
                lines.append(f"if (lane == 0u && row{r} < {st.n}u && row{r} >= QROWS) {{ "
                             f"kv[(l * CTX + PAST) * KVW + row{r} - QROWS] = sums[{r}]; }}")
        return "\n      ".join(lines)

    first = one_round("0u", use_pf)
    rest = one_round("j", False)
    return f"""{{
    // the input into workgroup memory, and its RMS
    var ss = 0.0;
    for (var c0 = 0u; c0 < {-(-k4 // WG)}u; c0++) {{
      let c = c0 * {WG}u + lid;
      if (c < {k4}u) {{
        var xv: vec4<f32>;
        for (var e = 0u; e < 4u; e++) {{
          let i = c * 4u + e;
          {x_load}
        }}
        xs[c] = xv;
        ss += dot(xv, xv);
      }}
    }}
    {f"let scale = inverseSqrt(wg_sum(ss, lid) / {float(st.k)} + {EPS});" if st.norm else "workgroupBarrier();  let scale = 1.0;  // xs written"}
    {{
      {first}
    }}
    for (var j = 1u; j * {groups} * {GROUPS_PER_WG * st.rows}u < {st.n}u; j++) {{
      {rest}
    }}
    workgroupBarrier();  // xs is refilled by the next stage
  }}"""


def attention_code(st: Stage, atomic_vec: bool, groups: str, in_base: str, out_base: str) -> str:
    """One workgroup per (head, split of KEYS keys): a thread per key scores it, the softmax
    over the split through workgroup memory, a thread per dimension sums the values; the
    partial (max, sum, values) goes to O's input, which merges the splits."""
    return f"""{{
    for (var it = wid; it < {st.n}u; it += {groups}) {{
      let h = it / SPLITS;
      let sp = it % SPLITS;
      let kvh = h / GQA;
      let key = sp * {KEYS}u + lid;
      var score = -1e30;
      if (lid < {KEYS}u && key < CTX) {{
        var acc = 0.0;
        for (var d = 0u; d < HD; d++) {{
          acc += {_vload(atomic_vec, f'{in_base} + h * HD + d')} * kv[(l * CTX + key) * KVW + kvh * HD + d];
        }}
        score = acc / sqrt(f32(HD));
      }}
      workgroupBarrier();
      if (lid < {KEYS}u) {{ red[lid] = score; }}
      workgroupBarrier();
      var mx = -1e30;
      for (var j = 0u; j < {KEYS}u; j++) {{ mx = max(mx, red[j]); }}
      workgroupBarrier();
      if (lid < {KEYS}u) {{ red[lid] = select(0.0, exp(score - mx), key < CTX); }}
      workgroupBarrier();
      var den = 0.0;
      for (var j = 0u; j < {KEYS}u; j++) {{ den += red[j]; }}
      let pbase = {out_base} + it * PW;
      if (lid < HD) {{
        var num = 0.0;
        for (var j = 0u; j < {KEYS}u; j++) {{
          let kj = min(sp * {KEYS}u + j, CTX - 1u);
          num += red[j] * kv[(l * CTX + kj) * KVW + KVW / 2u + kvh * HD + lid];
        }}
        {_vstore(atomic_vec, 'pbase + 4u + lid', 'num')}
      }}
      if (lid == 0u) {{
        {_vstore(atomic_vec, 'pbase', 'mx')}
        {_vstore(atomic_vec, 'pbase + 1u', 'den')}
      }}
    }}
  }}"""


def barrier_code(groups: str, prefetch: str, flag: bool = False) -> str:
    """Arrive, (prefetch the next stage's weights), wait for every workgroup: barrier `b`.
    The waiters spin on the arrival counter itself, or (`flag`) on a flag that the last
    arriver raises, so that spinning does not contend with the arrivals' increments."""
    if flag:
        arrive = f"""if (lid == 0u) {{
    if (atomicAdd(&sync[0], 1u) + 1u == (b + 1u) * {groups}) {{ atomicStore(&sync[2], b + 1u); }}
  }}"""
        done = "atomicLoad(&sync[2]) > b"
    else:
        arrive = "if (lid == 0u) { atomicAdd(&sync[0], 1u); }"
        done = f"atomicLoad(&sync[0]) >= (b + 1u) * {groups}"
    return f"""
  storageBarrier();
  workgroupBarrier();
  {arrive}
  {prefetch}
  if (lid == 0u) {{
    var spins = 0u;
    loop {{
      if ({done} || atomicLoad(&sync[1]) != 0u) {{ break; }}
      spins++;
      if (spins > {SPIN_CAP}u) {{ atomicStore(&sync[1], 1u); break; }}
    }}
  }}
  workgroupBarrier();
  storageBarrier();
  b++;"""


def _consts(shape: Shape, layer_words: int, layer_floats: int) -> str:
    return (f"const LAYER_WORDS: u32 = {layer_words}u;\nconst LAYER_FLOATS: u32 = {layer_floats}u;\n"
            f"const PAST: u32 = {shape.past}u;\nconst CTX: u32 = {shape.past + 1}u;\n"
            f"const KVW: u32 = {shape.kv_width}u;\nconst HD: u32 = {shape.head_dim}u;\n"
            f"const SPLITS: u32 = {shape.splits}u;\nconst PW: u32 = {shape.part_width}u;\n"
            f"const GQA: u32 = {shape.heads // shape.kv_heads}u;\nconst QROWS: u32 = {shape.hidden}u;\n")


def _entry(body: str, pf_decl: str) -> str:
    return f"""
@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wg3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let wid = wg3.x;
  let lane = lid % {LANES}u;
  let gs = wid * {GROUPS_PER_WG}u + lid / {LANES}u;
  {pf_decl}
  {body}
}}"""


def persistent_kernel(shape: Shape, groups: int, atomic_vec: bool, prefetch: bool, subgroups: str | None,
                      flag: bool = False) -> str:
    stages, lw, lf = plan(shape)
    lm = lm_stage(shape, lf)
    g = f"{groups}u"
    kmax = max(s.k for s in [*stages, lm])

    def pf(st: Stage, layer: str) -> str:
        return prefetch_code(st, g, layer) if prefetch else ""

    decl = ""
    if prefetch:
        names = sorted({n for s in [*stages, lm] for n in _prefetch_names(s)})
        decl = "\n  ".join(f"var pf_{r}_{i}: vec4<u32>;" for r, i in names)
    layer = []
    for idx, st in enumerate(stages):
        layer.append(stage_code(st, atomic_vec, g, prefetch))
        if idx + 1 < len(stages):
            layer.append(barrier_code(g, pf(stages[idx + 1], "l"), flag))
    # after a layer's last stage: the next layer's first, or the LM head
    body = f"""var b = 0u;
  {pf(stages[0], "0u")}
  for (var l = 0u; l < {shape.layers}u; l++) {{
  {"".join(layer)}
  if (l + 1u < {shape.layers}u) {{
    {barrier_code(g, pf(stages[0], "(l + 1u)"), flag)}
  }} else {{
    {barrier_code(g, pf(lm, "0u"), flag)}
  }}
  }}
  {stage_code(lm, atomic_vec, g, prefetch)}"""
    names = ("w", "wlm", "v", "sync", "kv") if shape.past else ("w", "wlm", "v", "sync")
    return (_header(subgroups, atomic_vec, kmax, names) + _consts(shape, lw, lf)
            + _helpers(subgroups) + _entry(body, decl))


def stage_bindings(st: Stage) -> tuple[str, ...]:
    """What a stage's own dispatch binds, in binding order."""
    if st.kind == "lm":
        return ("wlm", "v")
    if st.kind == "attn":
        return ("v", "lay", "kv") if st.attention else ("v", "lay")
    return ("w", "v", "lay", "kv") if st.kv_append else ("w", "v", "lay")


def stage_kernel(shape: Shape, st: Stage, subgroups: str | None, groups: int | None = None) -> tuple[str, int]:
    """One stage as its own dispatch, with as many workgroups as its rows need (or `groups`,
    looping over the rows as the persistent kernel does). The layer comes from a uniform, so
    the layers share one pipeline per stage, as the engine's do."""
    _, lw, lf = plan(shape)
    per_wg = 1 if st.attention else WG if st.kind == "attn" else GROUPS_PER_WG * st.rows
    groups = groups or -(-st.n // per_wg)
    g = f"{groups}u"
    body = f"let l = {'lay.x' if st.kind != 'lm' else '0u'};\n  {stage_code(st, False, g, False)}"
    names = stage_bindings(st)
    return (_header(subgroups, False, max(st.k, 4), names) + _consts(shape, lw, lf) + _helpers(subgroups)
            + _entry(body, "")), groups


RESET = """
@group(0) @binding(0) var<storage, read_write> sync: array<atomic<u32>>;
@compute @workgroup_size(1)
fn main() { atomicStore(&sync[0], 0u); atomicStore(&sync[1], 0u); atomicStore(&sync[2], 0u); }"""


# -- host side ----------------------------------------------------------------------------

def encode(a: np.ndarray, shape: Shape) -> tuple[np.ndarray, bytes]:
    """A matrix as the GPU holds it (bytes, padded to whole words) and as numpy sees it."""
    n, k = a.shape
    if shape.dtype == "f16":
        h = a.astype(np.float16)
        return h, h.tobytes()
    blocks = a.reshape(n, k // 32, 32)
    sc = np.maximum(np.abs(blocks).max(-1, keepdims=True), 1e-12) / 127.0
    q = np.clip(np.rint(blocks / sc), -127, 127).astype(np.int8)
    data = q.tobytes() + sc.astype(np.float32).tobytes()
    data += bytes(shape.matrix_words(n, k) * 16 - len(data))
    return (q * sc).reshape(n, k).astype(np.float32), data


class Step:
    """Seeded random weights of `shape` on the GPU (f16 or q8), and the numpy reference of one step."""

    def __init__(self, gpu: Gpu, shape: Shape, seed: int = 0) -> None:
        self.gpu, self.shape = gpu, shape
        stages, lw, lf = plan(shape)
        self.stages, self.layer_words, self.layer_floats = stages, lw, lf
        self.lm = lm_stage(shape, lf)
        if shape.layers * lw * 16 > gpu.max_binding:
            raise SystemExit(f"the layers' weights ({shape.layers * lw * 16 / 2**20:.0f} MiB) exceed this "
                             f"adapter's largest binding ({gpu.max_binding / 2**20:.0f} MiB): use fewer --layers")
        rng = np.random.default_rng(seed)
        self.wbuf = gpu.buffer(shape.layers * lw * 16, "weights")
        self.mats: list[dict[str, np.ndarray]] = []
        for layer in range(shape.layers):
            m = {}
            raw = []
            for st in stages:
                if st.kind == "attn":
                    continue
                a = rng.standard_normal((st.n, st.k), dtype=np.float32)
                if shape.past:  # outputs as large as inputs: the residual stream stays in range
                    a /= np.sqrt(st.k)
                m[st.kind], data = encode(a, shape)
                raw.append(data)
            self.gpu.write(self.wbuf, np.frombuffer(b"".join(raw), np.uint8), layer * lw * 16)
            self.mats.append(m)
        self.wlm, data = encode(rng.standard_normal((shape.vocab, shape.hidden), dtype=np.float32), shape)
        self.lmbuf = gpu.upload(np.frombuffer(data, np.uint8), "lm_head")
        self.vec_floats = self.lm.out_off + _pad(shape.vocab)
        self.vbuf = gpu.buffer(self.vec_floats * 4, "vectors")
        self.x0 = rng.standard_normal(shape.hidden).astype(np.float32)
        self.sync = gpu.buffer(16, "sync")
        # the cache: `past` positions of random keys and values, the new one written by QKV
        self.kv = rng.standard_normal((shape.layers, shape.past + 1, shape.kv_width), dtype=np.float32)
        self.kv[:, shape.past] = 0.0
        self.kvbuf = gpu.upload(self.kv, "kv")

    def reset_input(self) -> None:
        self.gpu.write(self.vbuf, np.zeros(self.vec_floats, np.float32))
        self.gpu.write(self.vbuf, self.x0)
        self.gpu.write(self.kvbuf, self.kv)  # the new position zero again: QKV must write it

    def reference(self) -> np.ndarray:
        if self.shape.past:
            return self.model_reference()

        def mv(w: np.ndarray, x: np.ndarray) -> np.ndarray:
            return (w.astype(np.float32) @ x) / np.sqrt(np.mean(x * x) + EPS)

        x = self.x0
        f = self.shape.inter
        for m in self.mats:
            q = mv(m["qkv"], x)
            a = q[: self.shape.hidden]
            o = mv(m["o"], a)
            gu = mv(m["gateup"], o)
            h = gu[:f] / (1 + np.exp(-gu[:f])) * gu[f:]
            x = mv(m["down"], h)
        return mv(self.wlm, x)

    def model_reference(self) -> np.ndarray:
        """The model's step (`past` > 0): float64 numpy."""
        s = self.shape
        h, f, hd, kvh = s.hidden, s.inter, s.head_dim, s.kv_heads

        def rms(x: np.ndarray) -> np.ndarray:
            return x / np.sqrt(np.mean(x * x) + EPS)

        x = self.x0.astype(np.float64)
        for layer, m in enumerate(self.mats):
            qkv = m["qkv"].astype(np.float64) @ rms(x)
            q = qkv[:h].reshape(s.heads, hd)
            cache = self.kv[layer].astype(np.float64).copy()
            cache[s.past] = qkv[h:]
            keys = cache[:, : kvh * hd].reshape(-1, kvh, hd)
            vals = cache[:, kvh * hd:].reshape(-1, kvh, hd)
            att = np.empty((s.heads, hd))
            for head in range(s.heads):
                g = head // (s.heads // kvh)
                sc = keys[:, g] @ q[head] / np.sqrt(hd)
                p = np.exp(sc - sc.max())
                att[head] = (p / p.sum()) @ vals[:, g]
            x2 = m["o"].astype(np.float64) @ att.reshape(-1) + x
            gu = m["gateup"].astype(np.float64) @ rms(x2)
            x = m["down"].astype(np.float64) @ (gu[:f] / (1 + np.exp(-gu[:f])) * gu[f:]) + x2
        return (self.wlm.astype(np.float64) @ rms(x)).astype(np.float32)

    def logits(self) -> np.ndarray:
        return self.gpu.read_array(self.vbuf, np.float32, self.shape.vocab, self.lm.out_off * 4)

    def multi(self, subgroups: str | None, groups: int | None = None) -> Program:
        prog = Program(self.gpu, "multi")
        u = self.gpu.usage
        lay = self.gpu.buffer(self.shape.layers * LAYER_ALIGN, "layer", u.UNIFORM | u.COPY_DST)
        slots = np.zeros((self.shape.layers, LAYER_ALIGN // 4), np.uint32)
        slots[:, 0] = np.arange(self.shape.layers)  # lay.x of each layer's slot
        self.gpu.write(lay, slots)
        for layer, st in [(la, st) for la in range(self.shape.layers) for st in self.stages] + [(0, self.lm)]:
            src, g = stage_kernel(self.shape, st, subgroups, groups)
            bufs = {"w": self.wbuf, "wlm": self.lmbuf, "v": self.vbuf, "kv": self.kvbuf,
                    "lay": (lay, layer * LAYER_ALIGN, 16)}
            names = stage_bindings(st)
            prog.add(Kernel(st.kind, src), [bufs[n] for n in names], (g, 1, 1))
        return prog

    def persistent(self, groups: int, atomic_vec: bool, prefetch: bool, subgroups: str | None,
                   flag: bool = False) -> Program:
        prog = Program(self.gpu, "persistent")
        prog.add(Kernel("reset", RESET), [self.sync], (1, 1, 1))
        src = persistent_kernel(self.shape, groups, atomic_vec, prefetch, subgroups, flag)
        binds = [self.wbuf, self.lmbuf, self.vbuf, self.sync] + ([self.kvbuf] if self.shape.past else [])
        prog.add(Kernel("persistent", src), binds, (groups, 1, 1))
        return prog


def check(step: Step, prog: Program, ref: np.ndarray) -> dict:
    step.reset_input()
    prog.run()
    got = step.logits()
    gave_up = int(step.gpu.read_array(step.sync, np.uint32, 2)[1])
    err = float(np.max(np.abs(got - ref)) / (np.max(np.abs(ref)) + 1e-30))
    return {"rel_err": err, "argmax_ok": bool(np.argmax(got) == np.argmax(ref)), "gave_up": gave_up}


def warm_up(gpu: Gpu, prog: Program, seconds: float = 0.5) -> None:
    """Keep the GPU busy with `prog` for a while. While the host made the weights and compiled
    the kernels, the GPU idled and clocked down: the first calls of this probe timed their
    first variants (in the first second or two of work) 2-4x slow, whatever they were."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            prog.run()
        gpu.sync()


def probe(backend: str, shape: Shape, groups_list: list[int], reps: int, plain: bool,
          profile: bool = False, flag: bool = False) -> list[dict]:
    gpu = open_gpu(backend)
    sub = gpu.subgroups_wgsl()
    print(f"# {gpu.name}; subgroups {'on' if sub is not None else 'off'}", flush=True)
    t0 = time.perf_counter()
    step = Step(gpu, shape)
    ref = step.reference()
    print(f"# weights and reference in {time.perf_counter() - t0:.1f} s", flush=True)
    variants: list[tuple[str, Program]] = [("multi", step.multi(sub))]
    for g in groups_list:
        variants.append((f"multi G={g}", step.multi(sub, g)))
        for atomic_vec in ([True, False] if plain else [True]):
            for fl in ([False, True] if flag else [False]):
                for pf in (False, True):
                    name = (f"persistent G={g} {'atomic' if atomic_vec else 'plain'}{' +prefetch' if pf else ''}"
                            f"{' +flag' if fl else ''}")
                    variants.append((name, step.persistent(g, atomic_vec, pf, sub, fl)))
    rows = []
    for name, prog in variants:
        row = {"backend": backend, "variant": name, "dispatches": len(prog), **check(step, prog, ref)}
        row["ok"] = row["rel_err"] < 2e-2 and not row["gave_up"]
        rows.append(row)
        print(f"{backend:5s} {name:40s} err {row['rel_err']:.1e}  argmax {'ok' if row['argmax_ok'] else 'WRONG'}  "
              f"gave up {row['gave_up']}", flush=True)
    if not gpu.has_timestamps:
        return rows
    warm_up(gpu, variants[0][1], 3.0)
    for rnd in range(2):  # all variants, then all again: a clock change shows as a disagreement
        for row, (name, prog) in zip(rows, variants):
            if not row["ok"]:
                row.setdefault("step_us", []).append(math.nan)
                continue
            warm_up(gpu, prog)
            row.setdefault("step_us", []).append(prog.time_gpu(1, reps=reps) * 1e6)
            if profile and rnd == 0 and name.startswith("multi"):
                row["per_kernel"] = prog.profile_by_label()
                print("      " + ", ".join(f"{r['kernel']} {r['us']:.0f} us/{r['count']}" for r in row["per_kernel"]))
    for row in rows:
        print(f"{backend:5s} {row['variant']:40s} step " + " / ".join(f"{t:7.1f}" for t in row["step_us"]) + " us",
              flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="dawn,wgpu")
    ap.add_argument("--groups", default="132,264", help="comma-separated workgroup counts of the persistent kernel")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--plain", action="store_true", help="also hand vectors over with plain loads")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    ap.add_argument("--wg", type=int, default=WG, help="threads per workgroup (a multiple of 32, at most 1024)")
    ap.add_argument("--layers", type=int, default=None, help="fewer layers than the shape has")
    ap.add_argument("--dtype", choices=["f16", "q8"], default="f16")
    ap.add_argument("--past", type=int, default=0,
                    help="0: attention stands in as a copy of q; N: the model's step with N cached positions")
    ap.add_argument("--profile", action="store_true", help="per-kernel GPU time of the multi-dispatch variants")
    ap.add_argument("--flag", action="store_true",
                    help="also barriers whose waiters spin on a flag the last arriver raises")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    set_workgroup_size(a.wg)
    base = SHAPES[a.shape]
    shape = Shape(base.hidden, base.qkv, base.inter, base.vocab, a.layers or base.layers, base.heads,
                  base.kv_heads, a.past, a.dtype)
    rows = []
    for b in a.backend.split(","):
        rows += probe(b, shape, [int(g) for g in a.groups.split(",")], a.reps, a.plain, a.profile, a.flag)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
