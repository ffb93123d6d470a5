"""Mixture-of-experts routing on the GPU: the router's choice, the grouping of a prompt's
(token, slot) pairs by expert, and the weighted sum of the chosen experts' outputs.

A layer's FFN becomes: router logits (a linear layer of `count` rows) -> `route_kernel`
(per token the `used` best experts and their gate weights, in table `route`) -> the experts'
gate/up and down projections as linear kernels with `linear.Experts` (they read only the
chosen experts' rows) -> `combine_kernel` (the residual plus the gate-weighted outputs).
Decode needs no CPU read-back: the mat-vecs take the expert ids from `route` themselves. A
prompt is grouped first (`group_kernel`), so that each expert's matmul reads its weights once
for all the tokens routed to it.

Table layouts (u32 words):
  route   per (token t, slot j), entry t * used + j: (expert id, gate weight as f32 bits)
  groups  [count + 1 starts][rows entries grouped by expert][rows inverse]: entries
          start[e]..start[e+1] are the (t * used + j) routed to expert e, and inverse[q] is
          entry q's row in that list (where the experts' outputs lie)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.program import Kernel
from .common import Signature

ROUTE_WG = 128
GROUP_WG = 256
COMBINE_WG = 256


@dataclass(frozen=True)
class Router:
    count: int  # experts
    used: int  # chosen per token
    # gate weights: a softmax over the chosen experts' logits (Mixtral, Qwen3-MoE with
    # norm_topk_prob, gpt-oss), or over all of them (OLMoE, Qwen2-MoE)
    normalize: bool = True
    # the choice by subgroup operations where the kernel has them (route_subgroup_wgsl)
    subgroups: bool = False
    # route_kernel: a token's logits are the sums of this many rows of partial sums (a router
    # matmul split K: row t * splits + s)
    splits: int = 1


def route_wgsl(r: Router, wg: int, logit: str, subgroups: bool = False) -> tuple[str, str]:
    """The choice of a token's `used` best experts by `wg` threads (`lid`): module-scope WGSL
    and the code (every thread runs it: it has barriers) that leaves the chosen ids and
    logits in rt_top_i / rt_top_v (best first) and the gate weights' denominator in rt_z; a
    gate weight is rt_gate(rt_top_v[j]) / rt_z. `logit` reads expert e's logit.

    Every thread ranks its experts against all the others (the count of better ones), so
    the choice takes two barriers instead of a reduction per chosen expert; a NaN logit
    ranks as the lowest so that the ranks stay distinct. With `subgroups` (the kernel has
    `sl` and `sgs`, and subgroup operations enabled) the choice is route_subgroup_wgsl's."""
    assert 1 <= r.used <= min(r.count, wg)
    # the softmax's denominator: over the chosen experts, or over all of them (the exponents
    # clamped: a NaN's stand-in, -3.4e38, is past what a GPU's exp approximation takes)
    i, n, vals = ("j", "RT_K", "rt_top_v") if r.normalize else ("e", "RT_E", "rt_v")
    z = f"var z = 0.0;\n    for (var {i} = 0u; {i} < {n}; {i}++) {{ z += rt_gate({vals}[{i}]); }}"
    decls = f"""
const RT_E: u32 = {r.count}u;
const RT_K: u32 = {r.used}u;
var<workgroup> rt_v: array<f32, RT_E>;
var<workgroup> rt_top_v: array<f32, RT_K>;
var<workgroup> rt_top_i: array<u32, RT_K>;
var<workgroup> rt_z: f32;
fn rt_gate(l: f32) -> f32 {{ return exp(max(l - rt_top_v[0], -80.0)); }}
"""
    code = f"""
  for (var e = lid; e < RT_E; e += {wg}u) {{
    let l = {logit};
    // a NaN told by its bits: compilers may assume finite floats and fold `l != l` away
    // (the NaN row of the router's test failed on an H100 so)
    rt_v[e] = select(l, -3.4e38, (bitcast<u32>(l) & 0x7fffffffu) > 0x7f800000u);
  }}
  workgroupBarrier();"""
    if subgroups:
        more, choose = route_subgroup_wgsl(r, wg)
        return decls + more, code + choose
    code += f"""
  for (var e = lid; e < RT_E; e += {wg}u) {{
    let ve = rt_v[e];
    var rank = 0u;
    for (var o = 0u; o < RT_E; o++) {{
      let vo = rt_v[o];
      rank += select(0u, 1u, vo > ve || (vo == ve && o < e));
    }}
    if (rank < RT_K) {{ rt_top_v[rank] = ve; rt_top_i[rank] = e; }}
  }}
  workgroupBarrier();
  if (lid == 0u) {{
    {z}
    rt_z = z;
  }}
  workgroupBarrier();"""
    return decls, code


def route_subgroup_wgsl(r: Router, wg: int) -> tuple[str, str]:
    """As `route_wgsl` (its logits already in rt_v), by subgroup operations: each subgroup
    makes the whole choice itself, `used` rounds of a subgroupMax over its lanes' best
    untaken experts (a lane's are every sgs-th, read from workgroup memory) and a
    subgroupMin of the ids that hold it, so that ties go to the lower id; no barrier until
    the choice is written. Needs `sl` (subgroup_invocation_id) and `sgs` (subgroup_size)."""
    words = -(-r.count // 32)
    decls = f"const RT_W: u32 = {words}u;\n"
    z = ("var z = 0.0;\n  for (var j = 0u; j < RT_K; j++) { z += exp(max(tv[j] - tv[0], -80.0)); }" if r.normalize else
         "var zl = 0.0;\n  for (var e = sl; e < RT_E; e += sgs) { zl += exp(max(rt_v[e] - tv[0], -80.0)); }\n"
         "  let z = subgroupAdd(zl);")
    code = f"""
  var taken: array<u32, RT_W>;
  var tv: array<f32, RT_K>;
  var ti: array<u32, RT_K>;
  for (var j = 0u; j < RT_K; j++) {{
    var best = bitcast<f32>(0xff7fffffu);  // (the lowest f32, below a NaN's stand-in: that one is still chosen)
    var bi = RT_E;
    for (var e = sl; e < RT_E; e += sgs) {{
      let v = rt_v[e];
      if ((taken[e / 32u] & (1u << (e % 32u))) == 0u && v > best) {{ best = v; bi = e; }}
    }}
    let m = subgroupMax(best);
    let w = subgroupMin(select(RT_E, bi, best == m));
    tv[j] = m;
    ti[j] = w;
    taken[w / 32u] |= 1u << (w % 32u);
  }}
  {z}
  if (lid < RT_K) {{ rt_top_v[lid] = tv[lid]; rt_top_i[lid] = ti[lid]; }}
  if (lid == 0u) {{ rt_z = z; }}
  workgroupBarrier();"""
    assert wg >= r.used
    return decls, code


def route_kernel(r: Router, subgroups: str | None = None) -> Kernel:
    """Per token (workgroup t; grid (n, 1, 1)): the `used` largest of its `count` logits
    (ties to the lower id) and their gate weights, into `route` (route_wgsl); where
    `r.subgroups` asks and `subgroups` is the backend's directive (as for the mat-vecs), chosen
    by subgroup operations (route_subgroup_wgsl)."""
    sig = Signature().storage("x", "array<f32>").storage("route", "array<vec2<u32>>", write=True)
    sg = r.subgroups and subgroups is not None
    logit = " + ".join(f"x[(t * {r.splits}u + {s}u) * RT_E + e]" for s in range(r.splits))
    decls, code = route_wgsl(r, ROUTE_WG, f"({logit})", sg)
    args = ", @builtin(subgroup_invocation_id) sl: u32, @builtin(subgroup_size) sgs: u32" if sg else ""
    body = decls + f"""
@compute @workgroup_size({ROUTE_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32{args}) {{
  let t = wid.x;{code}
  if (lid < RT_K) {{
    route[t * RT_K + lid] = vec2<u32>(rt_top_i[lid], bitcast<u32>(rt_gate(rt_top_v[lid]) / rt_z));
  }}
}}
"""
    k = sig.kernel(f"moe_route_{r.count}x{r.used}{'_sg' if sg else ''}", body)
    return Kernel(k.name, subgroups + "\n" + k.wgsl, k.bindings) if sg and subgroups else k


def tile_list_len(pairs: int, count: int, bm: int) -> int:
    """Entries of the (expert, block) tile list of `pairs` (token, slot) pairs grouped over
    `count` experts in blocks of bm: each expert's pairs make at most one partial block."""
    return -(-pairs // bm) + min(count, pairs)


def tile_list_at(count: int, rows: int) -> int:
    """Where in `groups` the tile list starts: after the experts' starts, the pairs in expert
    order and each pair's place in it."""
    return count + 1 + 2 * rows


def groups_words(count: int, rows: int, tiles: int = 0) -> int:
    """Words of a `groups` table for up to `rows` (token, slot) pairs (and with `tiles` its
    tile list of blocks of that many pairs)."""
    return tile_list_at(count, rows) + (tile_list_len(rows, count, tiles) if tiles else 0)


def group_kernel(count: int, used: int, rows: int, tiles: int = 0) -> Kernel:
    """The step's st.n * used (token, slot) pairs grouped by expert into `groups` (one
    workgroup; grid (1, 1, 1)). Within an expert the order is arbitrary: each entry's output
    lands in its own row, and `combine_kernel` sums a token's slots in slot order. With
    `tiles`, also the list of each expert's blocks of that many pairs, (expert << 16 | block),
    the entries after the last all ones (linear.Experts.tiles). The experts' starts (and their
    blocks' places in the list) are a scan over the threads, each taking PER experts in turn."""
    sig = Signature().state().storage("route", "array<vec2<u32>>").storage("groups", "array<u32>", write=True)
    per = -(-count // GROUP_WG)
    if tiles:
        assert count < 1 << 16 and rows < tiles << 16, "an entry holds 16 bits of expert and of block"
    blocks = f"(c + {tiles - 1}u) / {tiles}u" if tiles else "0u"
    listing = """
      for (var b = 0u; b < cb.y; b++) { groups[TILES + s.y + b] = (e << 16u) | b; }""" if tiles else ""
    fill = f"""
  for (var k = scan[WG - 1u].y + lid; k < {tile_list_len(rows, count, tiles)}u; k += WG) {{ groups[TILES + k] = 0xffffffffu; }}""" \
        if tiles else ""
    body = f"""
const E: u32 = {count}u;
const K: u32 = {used}u;
const WG: u32 = {GROUP_WG}u;
const PER: u32 = {per}u;
const ORDER: u32 = {count + 1}u;
const INV: u32 = {count + 1 + rows}u;
const TILES: u32 = {tile_list_at(count, rows)}u;
var<workgroup> cnt: array<atomic<u32>, E>;
var<workgroup> start: array<u32, E>;
var<workgroup> scan: array<vec2<u32>, WG>;  // (pairs, blocks) of threads 0..lid's experts
@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {{
  let n = min(st.n * K, {rows}u);
  for (var e = lid; e < E; e += WG) {{ atomicStore(&cnt[e], 0u); }}
  workgroupBarrier();
  for (var q = lid; q < n; q += WG) {{ atomicAdd(&cnt[min(route[q].x, E - 1u)], 1u); }}
  workgroupBarrier();
  var own = vec2<u32>(0u);  // this thread's experts lid * PER..: their pairs and blocks
  for (var j = 0u; j < PER; j++) {{
    let e = lid * PER + j;
    if (e < E) {{ let c = atomicLoad(&cnt[e]); own += vec2<u32>(c, {blocks}); }}
  }}
  scan[lid] = own;
  workgroupBarrier();
  for (var off = 1u; off < WG; off <<= 1u) {{  // inclusive scan (Hillis-Steele)
    let v = select(vec2<u32>(0u), scan[max(lid, off) - off], lid >= off);
    workgroupBarrier();
    scan[lid] += v;
    workgroupBarrier();
  }}
  var s = scan[lid] - own;
  for (var j = 0u; j < PER; j++) {{
    let e = lid * PER + j;
    if (e < E) {{
      let c = atomicLoad(&cnt[e]);
      let cb = vec2<u32>(c, {blocks});
      start[e] = s.x;
      groups[e] = s.x;{listing}
      s += cb;
      atomicStore(&cnt[e], 0u);
    }}
  }}
  if (lid == 0u) {{ groups[E] = scan[WG - 1u].x; }}{fill}
  workgroupBarrier();
  for (var q = lid; q < n; q += WG) {{
    let e = min(route[q].x, E - 1u);
    let i = start[e] + atomicAdd(&cnt[e], 1u);
    groups[ORDER + i] = q;
    groups[INV + q] = i;
  }}
}}
"""
    return sig.kernel(f"moe_group_{count}x{used}" + (f"_tiles{tiles}" if tiles else ""), body)


def combine_kernel(hidden: int, used: int, count: int = 0, rows: int = 0) -> Kernel:
    """h[t] += sum over slots j of gate weight(t, j) * y[row of (t, j)]; grid combine_grid.
    The row is t * used + j (a decode step's mat-vecs write slot j's output to row j), or
    with `count` the entry's row in a prompt's `groups` list."""
    sig = Signature().storage("y", "array<f32>").storage("route", "array<vec2<u32>>")
    row = "q"
    if count:
        sig.storage("groups", "array<u32>")
        row = f"groups[{count + 1 + rows}u + q]"
    sig.storage("h", "array<f32>", write=True)
    body = f"""
const H: u32 = {hidden}u;
const K: u32 = {used}u;
@compute @workgroup_size({COMBINE_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let i = wid.x * {COMBINE_WG}u + lid;
  let t = wid.y;
  if (i >= H) {{ return; }}
  var a = 0.0;
  for (var j = 0u; j < K; j++) {{
    let q = t * K + j;
    a += bitcast<f32>(route[q].y) * y[{row} * H + i];
  }}
  h[t * H + i] += a;
}}
"""
    return sig.kernel(f"moe_combine_{'grouped' if count else 'slots'}", body)


def combine_grid(hidden: int):
    """Of the token count n."""
    return lambda n: (-(-hidden // COMBINE_WG), n, 1)
