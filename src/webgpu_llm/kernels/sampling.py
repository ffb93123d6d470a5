"""Sampling on the GPU: the next token never leaves the GPU to start the next step.

Semantics follow llama.cpp's default chain: repetition penalty -> top-k -> top-p -> min-p ->
temperature -> draw. Greedy (temperature 0) and plain temperature sampling (no filters) take
the fast path: one arg-max over the vocabulary, with Gumbel noise for temperature
(argmax(l/T + Gumbel) is an exact draw from softmax(l/T)). With filters, each of the scan
workgroups keeps its best CAND logits; the pick kernel merges those lists and applies the
filters to at most CAND tokens — exact for top-k <= CAND; with top-k off (0) or larger, the
candidates are the CAND most likely tokens (top-p/min-p are normalised over the whole
vocabulary, so only the tail beyond CAND tokens is dropped).

The pick kernel appends the token to `tokens`, advances `st.pos` by `st.n` and sets n = 1:
the next step's kernels see the new position without any CPU write.
"""

from __future__ import annotations

from ..runtime.program import Kernel
from .common import Signature, Slots

WG = 256
PER_THREAD = 8
SLICE = WG * PER_THREAD  # logits per scan workgroup
CAND = 64  # candidates kept per scan workgroup (and at most after the merge)

RNG = """
fn pcg(v: u32) -> u32 {
  let s = v * 747796405u + 2891336453u;
  let w = ((s >> ((s >> 28u) + 4u)) ^ s) * 277803737u;
  return (w >> 22u) ^ w;
}
// uniform in (0, 1), a pure function of (seed, draw number, stream index)
fn rand01(seed: u32, n: u32, i: u32) -> f32 {
  let x = pcg(seed ^ pcg(n ^ pcg(i + 0x9e3779b9u)));
  return (f32(x >> 8u) + 0.5) * (1.0 / 16777216.0);
}
"""

# Arg-max over the workgroup of (value, index) pairs; ties go to the lower index.
ARGMAX = f"""
var<workgroup> amx_v: array<f32, {WG}>;
var<workgroup> amx_i: array<u32, {WG}>;
fn wg_argmax(v: f32, i: u32, lid: u32) -> vec2<u32> {{
  amx_v[lid] = v;
  amx_i[lid] = i;
  workgroupBarrier();
  for (var s = {WG // 2}u; s > 0u; s = s >> 1u) {{
    if (lid < s) {{
      let ov = amx_v[lid + s];
      let oi = amx_i[lid + s];
      if (ov > amx_v[lid] || (ov == amx_v[lid] && oi < amx_i[lid])) {{ amx_v[lid] = ov; amx_i[lid] = oi; }}
    }}
    workgroupBarrier();
  }}
  let r = vec2<u32>(bitcast<u32>(amx_v[0]), amx_i[0]);
  workgroupBarrier();
  return r;
}}
"""


def scan_workgroups(vocab: int) -> int:
    n = -(-vocab // SLICE)
    assert n <= WG, "vocabulary too large for the sampler"
    return n


def penalty_kernel(vocab: int, slots: Slots | None = None) -> Kernel:
    """Repetition penalties (llama.cpp's) on the last `repeat_last_n` tokens, in place: each
    distinct token's logit is divided (positive) or multiplied (negative) by repeat_penalty,
    then lowered by frequency_penalty per occurrence and presence_penalty once.
    With `slots`, one workgroup per sampled row (table `samples`: row, slot, position) with
    its slot's settings and history; grid = (samples,)."""
    sig = Signature().state()
    if slots:
        sig.storage("samples", "array<vec4<u32>>")
        sig.storage("slots", "array<State>")
    sig.storage("tokens", "array<u32>")
    sig.storage("logits", "array<f32>", write=True)
    if slots:
        head = (f"  let sm = samples[wid.x];\n  let ss = slots[sm.y];\n  let tb = sm.y * {slots.token_stride}u;\n"
                f"  let lb = wid.x * {vocab}u;\n  let pen = ss.repeat_penalty;\n"
                "  let end = sm.z + 1u;  // the slot's tokens[0..end) are its context so far\n")
        s_, tb, lb, args = "ss", "tb + ", "lb + ", "@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32"
    else:
        head = "  let pen = st.repeat_penalty;\n  let end = st.pos + st.n;  // tokens[0..end) are the context so far\n"
        s_, tb, lb, args = "st", "", "", "@builtin(local_invocation_index) lid: u32"
    body = f"""
@compute @workgroup_size({WG})
fn main({args}) {{
{head}  let cnt = min(min({s_}.repeat_last_n, end), {WG}u);
  let fp = {s_}.frequency_penalty;
  let pp = {s_}.presence_penalty;
  if ((pen == 1.0 && fp == 0.0 && pp == 0.0) || lid >= cnt) {{ return; }}
  let tok = tokens[{tb}end - 1u - lid];
  for (var j = 0u; j < lid; j++) {{ if (tokens[{tb}end - 1u - j] == tok) {{ return; }} }}  // once per token
  var seen = 0.0;
  for (var j = lid; j < cnt; j++) {{ if (tokens[{tb}end - 1u - j] == tok) {{ seen += 1.0; }} }}
  if (tok < {vocab}u) {{
    let l = logits[{lb}tok];
    logits[{lb}tok] = select(l * pen, l / pen, l > 0.0) - fp * seen - pp;
  }}
}}
"""
    return sig.kernel("sample_penalty", body)


def scan_kernel(vocab: int, filtered: bool, slots: Slots | None = None) -> Kernel:
    """Per-workgroup arg-max (fast path) or top-CAND list plus softmax statistics (filtered).
    With `slots`, grid.y is the sampled row (table `samples`), with its slot's settings."""
    nwg = scan_workgroups(vocab)
    sig = Signature().state()
    if slots:
        sig.storage("samples", "array<vec4<u32>>")
        sig.storage("slots", "array<State>")
        head = f"  let ss = slots[samples[wid.y].y];\n  let lb = wid.y * {vocab}u;\n  let pb = wid.y * {nwg}u;\n"
        st, lb, pb = "ss", "lb + ", "pb + "
    else:
        head, st, lb, pb = "", "st", "", ""
    sig.storage("logits", "array<f32>")
    if not filtered:
        sig.storage("part", "array<vec2<u32>>", write=True)
        body = RNG + ARGMAX + f"""
@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
{head}  let temp = {st}.temperature;
  var bv = -3.4e38;
  var bi = 0xffffffffu;
  for (var e = 0u; e < {PER_THREAD}u; e++) {{
    let i = wid.x * {SLICE}u + e * {WG}u + lid;
    if (i < {vocab}u) {{
      var v = logits[{lb}i];
      if (temp > 0.0) {{ v = v / temp - log(-log(rand01({st}.seed, {st}.n_gen, i))); }}
      if (v > bv) {{ bv = v; bi = i; }}
    }}
  }}
  let r = wg_argmax(bv, bi, lid);
  if (lid == 0u) {{ part[{pb}wid.x] = r; }}
}}
"""
        return sig.kernel("sample_scan_argmax", body)
    sig.storage("cand", "array<vec2<u32>>", write=True)
    sig.storage("stats", "array<vec2<f32>>", write=True)
    body = ARGMAX + f"""
var<workgroup> red: array<vec2<f32>, {WG}>;
@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
{head}  // this thread's logits, sorted descending (insertion sort of at most {PER_THREAD})
  var v: array<f32, {PER_THREAD}>;
  var ix: array<u32, {PER_THREAD}>;
  var cnt = 0u;
  var mx = -3.4e38;
  for (var e = 0u; e < {PER_THREAD}u; e++) {{
    let i = wid.x * {SLICE}u + e * {WG}u + lid;
    if (i < {vocab}u) {{
      let x = logits[{lb}i];
      mx = max(mx, x);
      var j = cnt;
      while (j > 0u && v[j - 1u] < x) {{ v[j] = v[j - 1u]; ix[j] = ix[j - 1u]; j--; }}
      v[j] = x;
      ix[j] = i;
      cnt++;
    }}
  }}
  // workgroup max and sum of exp(l - max), merged as (max, sum) pairs
  var sm = 0.0;
  for (var j = 0u; j < cnt; j++) {{ sm += exp(v[j] - mx); }}
  red[lid] = vec2<f32>(mx, sm);
  workgroupBarrier();
  for (var s = {WG // 2}u; s > 0u; s = s >> 1u) {{
    if (lid < s) {{
      let a = red[lid];
      let b = red[lid + s];
      let m = max(a.x, b.x);
      red[lid] = vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
    }}
    workgroupBarrier();
  }}
  if (lid == 0u) {{ stats[{pb}wid.x] = red[0]; }}
  // {CAND} rounds of "take the best head of the per-thread lists"
  var ptr = 0u;
  for (var r = 0u; r < {CAND}u; r++) {{
    var hv = -3.4e38;
    var hi = 0xffffffffu;
    if (ptr < cnt) {{ hv = v[ptr]; hi = ix[ptr]; }}
    let w = wg_argmax(hv, hi, lid);
    if (w.y == hi && ptr < cnt) {{ ptr++; }}
    if (lid == 0u) {{ cand[({pb}wid.x) * {CAND}u + r] = w; }}
  }}
}}
"""
    if not slots:  # (the one-sequence kernel indexes cand without parentheses)
        body = body.replace(f"cand[(wid.x) * {CAND}u + r]", f"cand[wid.x * {CAND}u + r]")
    return sig.kernel("sample_scan_topk", body)


def pick_kernel(vocab: int, filtered: bool, slots: Slots | None = None) -> Kernel:
    """Merge the scan results, choose the token, append it and advance the position.

    With `slots`, one workgroup per sampled row (table `samples`: row, slot, position): the
    token goes to its slot's history after that position and to `sampled`, and the slot's
    draw counter advances; the filtered variant takes the arg-max of the fast scan for the
    slots that need no filter (greedy, or temperature alone), so that a batch can mix both."""
    nwg = scan_workgroups(vocab)
    if slots:
        sig = Signature().state()
        sig.storage("samples", "array<vec4<u32>>")
        sig.storage("slots", "array<State>", write=True)
        sig.storage("tokens", "array<u32>", write=True)
        sig.storage("sampled", "array<u32>", write=True)
        head = "  let sm = samples[wid.x];\n  let ss = slots[sm.y];\n"
        st, pb, args = "ss", f"wid.x * {nwg}u + ", "@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32"
        finish = f"""
  if (lid == 0u) {{
    tokens[sm.y * {slots.token_stride}u + sm.z + 1u] = tok;
    slots[sm.y].n_gen = ss.n_gen + 1u;
    sampled[wid.x] = tok;
  }}"""
    else:
        sig = Signature().state(write=True)
        sig.storage("tokens", "array<u32>", write=True)
        head, st, pb, args = "", "st", "", "@builtin(local_invocation_index) lid: u32"
        finish = """
  if (lid == 0u) {
    let at = st.pos + st.n;
    tokens[at] = tok;
    st.pos = at;
    st.n = 1u;
    st.n_gen = st.n_gen + 1u;
  }"""
    argmax = f"""  var bv = -3.4e38;
  var bi = 0xffffffffu;
  if (lid < {nwg}u) {{ bv = bitcast<f32>(part[{pb}lid].x); bi = part[{pb}lid].y; }}
  let tok = wg_argmax(bv, bi, lid).y;"""
    if not filtered:
        sig.storage("part", "array<vec2<u32>>")
        body = ARGMAX + f"""
@compute @workgroup_size({WG})
fn main({args}) {{
{head}{argmax}{finish}
}}
"""
        return sig.kernel("sample_pick_argmax", body)
    if slots:
        sig.storage("part", "array<vec2<u32>>")
    sig.storage("cand", "array<vec2<u32>>")
    sig.storage("stats", "array<vec2<f32>>")
    plain = ""
    if slots:  # this slot samples without filters: the fast scan's arg-max
        plain = f"""  if (lid == 0u) {{ plain = u32(!({st}.temperature > 0.0 && ({st}.top_k > 0u || {st}.top_p < 1.0 || {st}.min_p > 0.0))); }}
  if (workgroupUniformLoad(&plain) == 1u) {{
{argmax.replace(chr(10) + "  ", chr(10) + "    ").replace("  var bv", "    var bv", 1)}{finish.replace(chr(10) + "  ", chr(10) + "    ")}
    return;
  }}
"""
    body = RNG + ARGMAX + f"""
var<workgroup> top_v: array<f32, {CAND}>;
var<workgroup> top_i: array<u32, {CAND}>;
var<workgroup> kk: u32;
{"var<workgroup> plain: u32;" + chr(10) if slots else ""}@compute @workgroup_size({WG})
fn main({args}) {{
{head}{plain}  if (lid == 0u) {{ kk = select({CAND}u, min({st}.top_k, {CAND}u), {st}.top_k > 0u); }}
  let k = workgroupUniformLoad(&kk);
  // merge the sorted per-workgroup candidate lists: k rounds of "best head"
{merge_candidates(nwg, pb, "k")}
  var tok = 0u;
  if (lid == 0u) {{
    // softmax normaliser (temperature 1): the top-k set when top-k is on, else the vocabulary
    let m0 = top_v[0];
    var z = 0.0;
    if ({st}.top_k > 0u) {{
      for (var j = 0u; j < k; j++) {{ z += exp(top_v[j] - m0); }}
    }} else {{
      for (var w = 0u; w < {nwg}u; w++) {{ z += stats[{pb}w].y * exp(stats[{pb}w].x - m0); }}
    }}
    // top-p: the shortest prefix whose mass reaches p (at least one token)
    var keep = k;
    if ({st}.top_p < 1.0) {{
      var cum = 0.0;
      for (var j = 0u; j < k; j++) {{
        cum += exp(top_v[j] - m0) / z;
        if (cum >= {st}.top_p) {{ keep = j + 1u; break; }}
      }}
    }}
    // min-p: drop tokens below min_p times the most likely one
    if ({st}.min_p > 0.0) {{
      let floor_l = m0 + log({st}.min_p);
      var j = 1u;
      while (j < keep && top_v[j] >= floor_l) {{ j++; }}
      keep = j;
    }}
    // never past the valid candidates (a vocabulary smaller than the list leaves empty slots)
    var nv = 0u;
    for (var j = 0u; j < k; j++) {{ if (top_i[j] < {vocab}u) {{ nv++; }} }}
    keep = max(min(keep, nv), 1u);
    // temperature, then draw
    let temp = max({st}.temperature, 1e-6);
    var tot = 0.0;
    for (var j = 0u; j < keep; j++) {{ tot += exp((top_v[j] - m0) / temp); }}
    let u = rand01({st}.seed, {st}.n_gen, 0xfffffffu) * tot;
    var acc = 0.0;
    tok = top_i[keep - 1u];
    for (var j = 0u; j < keep; j++) {{
      acc += exp((top_v[j] - m0) / temp);
      if (u < acc) {{ tok = top_i[j]; break; }}
    }}
  }}{finish}
}}
"""
    if not slots:  # (the one-sequence kernel indexes cand without parentheses)
        body = body.replace(f"cand[(lid) * {CAND}u + ptr]", f"cand[lid * {CAND}u + ptr]")
    return sig.kernel("sample_pick_topk", body)


TOP_LOGPROBS = 20  # alternatives a token's logprobs may list (OpenAI's limit)


def merge_candidates(nwg: int, pb: str, rounds: str) -> str:
    """WGSL: `rounds` rounds of taking the best head of the `nwg` scan workgroups' sorted
    candidate lists (`cand`, this row's from workgroup `pb`; pb a prefix such as "pb + " or
    ""), into top_v / top_i, then a barrier."""
    return f"""  var ptr = 0u;
  for (var r = 0u; r < {rounds}; r++) {{
    var hv = -3.4e38;
    var hi = 0xffffffffu;
    if (lid < {nwg}u && ptr < {CAND}u) {{
      let c = cand[({pb}lid) * {CAND}u + ptr];
      hv = bitcast<f32>(c.x);
      hi = c.y;
    }}
    let w = wg_argmax(hv, hi, lid);
    if (lid < {nwg}u && w.y == hi) {{ ptr++; }}
    if (lid == 0u) {{ top_v[r] = bitcast<f32>(w.x); top_i[r] = w.y; }}
  }}
  workgroupBarrier();"""


def logprob_kernel(vocab: int) -> Kernel:
    """After the pick (and the filtered scan, whose per-workgroup softmax statistics and
    sorted candidates it reads): per sampled row (table `samples`, grid = (samples,)), the
    log-probability of the token drawn and of the TOP_LOGPROBS most likely tokens under the
    model's distribution (softmax of the logits, after the repetition penalties), into
    `lp[j * (1 + 2 TOP) ..]`: the token's, then (token id as bits, logprob) pairs."""
    nwg = scan_workgroups(vocab)
    top, width = TOP_LOGPROBS, 1 + 2 * TOP_LOGPROBS
    sig = Signature()
    sig.storage("logits", "array<f32>")
    sig.storage("cand", "array<vec2<u32>>")
    sig.storage("stats", "array<vec2<f32>>")
    sig.storage("sampled", "array<u32>")
    sig.storage("lp", "array<f32>", write=True)
    body = ARGMAX + f"""
var<workgroup> top_v: array<f32, {top}>;
var<workgroup> top_i: array<u32, {top}>;
@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let j = wid.x;
  let pb = j * {nwg}u;
{merge_candidates(nwg, "pb + ", f"{top}u")}
  if (lid == 0u) {{
    var m = -3.4e38;
    for (var w = 0u; w < {nwg}u; w++) {{ m = max(m, stats[pb + w].x); }}
    var z = 0.0;
    for (var w = 0u; w < {nwg}u; w++) {{ z += stats[pb + w].y * exp(stats[pb + w].x - m); }}
    let lse = m + log(z);
    let o = j * {width}u;
    lp[o] = logits[j * {vocab}u + min(sampled[j], {vocab - 1}u)] - lse;
    for (var r = 0u; r < {top}u; r++) {{
      lp[o + 1u + 2u * r] = bitcast<f32>(top_i[r]);
      lp[o + 2u + 2u * r] = top_v[r] - lse;
    }}
  }}
}}
"""
    return sig.kernel("sample_logprobs", body)


ADVANCE_WG = 64


def advance_kernel() -> Kernel:
    """A batched decode step's tables one position on, for the next step in the same submit:
    each of the st.n rows (one a decoding sequence, its own query block and sampled row, in the
    same order) moves to the position after it (row x, block w, sample z), and a one-row step's
    st.pos with it (its split-K attention reads it). grid = (ceil(n / ADVANCE_WG), 1, 1)."""
    sig = Signature().state(write=True)
    sig.storage("rows", "array<vec2<u32>>", write=True)
    sig.storage("blocks", "array<vec4<u32>>", write=True)
    sig.storage("samples", "array<vec4<u32>>", write=True)
    body = f"""
@compute @workgroup_size({ADVANCE_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
  let i = gid.x;
  let n = st.n;
  if (i >= n) {{ return; }}
  rows[i].x = rows[i].x + 1u;
  blocks[i].w = blocks[i].w + 1u;
  samples[i].z = samples[i].z + 1u;
  if (i == 0u && n == 1u) {{ st.pos = st.pos + 1u; }}
}}
"""
    return sig.kernel("advance_rows", body)
