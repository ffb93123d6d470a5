"""Causal grouped-query attention over the KV cache, with an online softmax.

One workgroup per (query head, query token) walks its keys in chunks of `chunk`. For decode
the keys are split over workgroups as well (flash-decoding): each writes a partial
(max, sum, weighted values) that the output projection's prologue merges (linear.py,
`attn` prologue), so the merge costs no dispatch of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.program import Kernel
from .common import Signature, wgsl_reduce


@dataclass(frozen=True)
class AttentionSpec:
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ctx: int
    chunk: int = 64  # keys per step (and per split in decode); also the workgroup size
    split: bool = False  # decode: grid (heads, max_splits) writing partials

    @property
    def max_splits(self) -> int:
        return -(-self.ctx // self.chunk)


def attention_kernel(a: AttentionSpec, subgroups: str | None = None) -> Kernel:
    """`subgroups`: None, or the WGSL directive enabling subgroup operations (see Gpu)."""
    d4 = a.head_dim // 4
    wg = a.chunk
    groups = wg // d4  # threads (g, d4) share the weighted sum over keys
    assert groups >= 1, "head_dim/4 must not exceed the chunk size"
    sig = Signature().state()
    sig.storage("q", "array<vec4<f32>>")
    sig.storage("kv", "array<vec4<f32>>")  # K cache, then V cache
    if a.split:
        sig.storage("ml", "array<vec2<f32>>", write=True)
        sig.storage("acc", "array<vec4<f32>>", write=True)
        head = """  let s = wid.y;
  let t = 0u;
  let k0 = s * CH;
  let k1 = min(k0 + CH, st.pos + 1u);
  if (k0 >= k1) { return; }"""
        store = f"""    acc[(h * {a.max_splits}u + s) * D4 + d4] = o;
    if (d4 == 0u) {{ ml[h * {a.max_splits}u + s] = vec2<f32>(m, l); }}"""
    else:
        sig.storage("out", "array<vec4<f32>>", write=True)
        head = """  let t = wid.y;
  if (t >= st.n) { return; }
  let k0 = 0u;
  let k1 = st.pos + t + 1u;"""
        store = f"    out[(t * {a.n_heads}u + h) * D4 + d4] = o / l;"
    sg = subgroups is not None
    sg_arg = ", @builtin(subgroup_size) sgs: u32" if sg else ""
    sg_val = "" if sg else "let sgs = 1u;"
    # Every loop with a load in it is unrolled: the loads of a chunk issue together instead of
    # one latency after another (decode attention is latency-bound, not bandwidth-bound).
    score = " + ".join(f"q[qb + {i}u] * kv[kr + {i}u]" for i in range(d4))
    per_g = -(-a.chunk // groups)
    vsum = "\n".join(
        f"      {{ let jj = g + {groups}u * {i}u; let pj = select(0.0, ps[min(jj, CH - 1u)], jj < n); "
        f"o += pj * kv[VOFF + (kvbase + c0 + min(jj, n - 1u)) * D4 + d4]; }}"
        for i in range(per_g))
    body = wgsl_reduce("red_max", "max", wg, subgroups=sg) + wgsl_reduce("red_sum", "sum", wg, subgroups=sg) + f"""
const CH: u32 = {a.chunk}u;
const D4: u32 = {d4}u;
const VOFF: u32 = {a.n_kv_heads * a.ctx * d4}u;
const G: u32 = {groups}u;
var<workgroup> ps: array<f32, CH>;
var<workgroup> part: array<vec4<f32>, {wg}>;
@compute @workgroup_size({wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32{sg_arg}) {{
  {sg_val}
  let h = wid.x;
{head}
  let kvh = h / {a.n_heads // a.n_kv_heads}u;
  let kvbase = kvh * {a.ctx}u;
  let qb = (t * {a.n_heads}u + h) * D4;
  let g = lid / D4;
  let d4 = lid % D4;
  var m = -3.0e38;
  var l = 0.0;
  var o = vec4<f32>(0.0);
  for (var c0 = k0; c0 < k1; c0 += CH) {{
    let j = c0 + lid;
    var sc = -3.0e38;
    if (j < k1) {{
      let kr = (kvbase + j) * D4;
      let acc4 = {score};
      sc = (acc4.x + acc4.y + acc4.z + acc4.w) * {1.0 / a.head_dim ** 0.5!r};
    }}
    let mn = max(m, red_max(sc, lid, sgs));
    let p = select(0.0, exp(sc - mn), j < k1);
    ps[lid] = p;
    let alpha = exp(m - mn);
    l = l * alpha + red_sum(p, lid, sgs);
    m = mn;
    o = o * alpha;
    if (g < G) {{
      let n = min(CH, k1 - c0);
{vsum}
    }}
    workgroupBarrier();
  }}
  part[lid] = o;
  workgroupBarrier();
  if (g == 0u) {{
    for (var gg = 1u; gg < G; gg++) {{ o += part[gg * D4 + d4]; }}
{store}
  }}
}}
"""
    k = sig.kernel("attention_split" if a.split else "attention", body)
    return Kernel(k.name, subgroups + "\n" + k.wgsl, k.bindings) if subgroups else k


def attention_grid(a: AttentionSpec):
    if a.split:
        return (a.n_heads, a.max_splits, 1)
    return lambda n: (a.n_heads, n, 1)
