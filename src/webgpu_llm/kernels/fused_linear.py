"""Linear layers of the torch device with fused ends: a mat-vec over unpadded, strided torch
weights of one float dtype (the engine's packed formats: linear.py).

    y_s = norm(x) W_s^T (+ b_s)    for up to three weights sharing x (Q, K and V)
    y   = norm(x) W^T (+ b) (+ r)  (a residual connection)
    y   = silu(norm(x) Wg^T) * (norm(x) Wu^T)   (SwiGLU)

where norm is an optional RMSNorm of x (as the transformers module computes it). For one row
of x (decode), the threads that share an output column read its weight row 16 bytes at a time
and x's matching 16 bytes beside it (where x is normalised first, x is staged and normalised
once in workgroup memory instead); bias, residual and gate are applied before the single
store. A workgroup takes fewer columns (more threads each) when there are few columns, to keep
enough loads in flight.

x may also be given as one query row's attention partials (`MatvecSpec.merge`): the kernel
merges them as it stages x, and writes the new token into the KV caches, so the attention's own
merge launch is not needed. Where x is staged, each thread may request its weights before the
staging (`MatvecSpec.early`).

Parameter block: 0 k, 1 columns, 2 x offset, 3 norm weight offset, 4 eps (f32); per weight SEG
words (first column, weight offset and row stride in 16-byte units, bias offset, output
offset); the residual's offset, the gate's offset and row stride (16-byte units); then, with
`merge`, the attention launch's parameter block.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.program import Kernel
from .common import Signature
from .dtypes import WGSL_DTYPE_HELPERS, dtype, element_store, loader, vec4_elems, vec4_reader
from .sdpa import append_wgsl, staged_merge_wgsl
from .strided import GROUP_ID, MAIN_ARGS, words

WG = 256  # threads per workgroup, shared by 2 to 32 output columns (see columns_per_group)
# Where x is staged (normalised, or merged from attention partials), each thread requests all
# its weight units before the staging when they are at most this many: their memory latency
# then overlaps the staging's instead of following it
EARLY = 4
MAX_K = 7168  # x staged in workgroup memory as f32 (28 KiB of the 32 KiB WebGPU guarantees)
SEG = 5  # parameter words per weight: first column, weight offset and row stride (16-byte units),
#          bias offset, output offset


@dataclass(frozen=True)
class MatvecSpec:
    """Everything the WGSL depends on: dtypes of the operands (by name) and which ends are fused."""

    x: str
    w: str
    ys: tuple[str, ...]
    biases: tuple[str | None, ...]
    residual: str | None
    gated: bool
    norm: str | None  # dtype of the norm weight
    norm_round: str | None  # dtype the normalised row is rounded to before the weight
    cols: int  # output columns per workgroup
    k: int  # staged inputs: workgroup memory is sized (and zeroed by WebGPU) per layer width
    subgroups: str | None = None  # the WGSL enable line where subgroup reductions are used
    direct: bool = False  # read x's 16-byte units from memory beside the weights, not staged
    wg: int = WG  # threads per workgroup
    # x is one query row's attention output, merged from its key splits' partials as it is
    # staged (sdpa.staged_merge_wgsl): (splits, head size of the values, of the keys, and the
    # dtypes of the new token's write into the caches: sdpa.append_wgsl)
    merge: tuple[int, int, int, tuple[str, str, str, str, str, str | None]] | None = None
    # a staged x: each thread requests its weights before the staging where they are at most
    # this many units (0: never; see EARLY)
    early: int = 0

    @property
    def segments(self) -> int:
        return len(self.ys)


def columns_per_group(n: int, gated: bool = False) -> int:
    """Output columns per workgroup of a mat-vec with n columns: up to 32 for wide layers (the
    LM head: each workgroup stages and normalises x once for all its columns), down to 4 while
    that leaves 256 workgroups and 2 below (enough workgroups to fill the GPU); a gated mat-vec
    reads two weight rows a column and takes at least 16 (16 threads a column). Measured on
    H200 compiled decode steps of the 0.5B and 1.5B shapes (docs/performance.md)."""
    cols = next((c for c in (32, 16, 8) if n // c >= 1024), 4 if n // 4 >= 256 else 2)
    return max(cols, 16) if gated else cols


def default_shape(n: int, k: int, gated: bool = False) -> tuple[int, int]:
    """(threads per workgroup, output columns per workgroup) of a mat-vec with n columns of k
    inputs."""
    return WG, columns_per_group(n, gated)


def _bindings(s: MatvecSpec) -> tuple[Signature, str, str]:
    """(the bindings, loader and attention helpers, store helpers)."""
    xdt = dtype(s.x)
    sig, loads, stores = Signature(), "" if s.direct or s.merge else loader(xdt, "X", "f32"), ""

    def add(name: str, vec4: bool = False, write: bool = False, atomic: bool = False) -> None:
        if vec4:  # weights: read 16 bytes at a time
            sig.storage(name, "array<vec4<u32>>")
        else:
            words(sig, name, write, atomic)

    for i, y in enumerate(s.ys):
        atomic, st = element_store(dtype(y), f"Y{i}")
        add(f"Y{i}", write=True, atomic=atomic)
        stores += st
    if s.merge:
        sig.storage("S", "array<f32>")
    else:
        add("X4" if s.direct else "X", vec4=s.direct)
    for i in range(s.segments):
        add(f"W{i}", vec4=True)
    if s.gated:
        add("G", vec4=True)
    for i, b in enumerate(s.biases):
        if b is not None:
            add(f"B{i}")
            loads += loader(dtype(b), f"B{i}", "f32")
    if s.residual is not None:
        add("R")
        loads += loader(dtype(s.residual), "R", "f32")
    if s.norm is not None:
        add("NW")
        loads += loader(dtype(s.norm), "NW", "f32")
    if s.merge:
        _, dv, d, app = s.merge
        names, helpers, write_new = append_wgsl(app, d, dv, _attention_words(s), s.wg)
        for name in names:
            add(name, write=name in ("K", "V"))
        loads += f"const NEG: f32 = -3.4028234663852886e38;\n{helpers}{write_new}"
    add("P")
    return sig, loads, stores


def _attention_words(s: MatvecSpec) -> int:
    """Where the attention's parameter words start in the block (after this kernel's own)."""
    return 5 + SEG * s.segments + 3


def _stage(s: MatvecSpec) -> tuple[str, str]:
    """(workgroup declarations, statements) putting x into workgroup memory `xs` as the dot
    products read it: normalised, merged from attention partials, copied, or (direct) not at
    all. x's length is a constant of the kernel: the staging loops unroll, their loads go out
    together."""
    xdt, WG = dtype(s.x), s.wg  # (the WGSL names it so)
    if s.norm is not None:
        rnd = dtype(s.norm_round or s.x)
        if s.subgroups is not None:  # one subgroupAdd, one barrier (not log2(WG) of them)
            total = f"""  let sss = subgroupAdd(ss);
  if (lid % sgs == 0u) {{ red[lid / sgs] = sss; }}
  workgroupBarrier();
  var tot = 0.0;
  for (var t = 0u; t < ({WG}u + sgs - 1u) / sgs; t++) {{ tot += red[t]; }}"""
        else:
            total = f"""  red[lid] = ss;
  workgroupBarrier();
  for (var t = {WG // 2}u; t > 0u; t = t >> 1u) {{
    if (lid < t) {{ red[lid] = red[lid] + red[lid + t]; }}
    workgroupBarrier();
  }}
  let tot = red[0];"""
        # the norm's weights are requested with x (one round of loads, not two)
        ni = -(-s.k // WG)
        return "", f"""  var ss = 0.0;
  var nwv: array<f32, {ni}>;
  for (var i = 0u; i < {ni}u; i++) {{
    let k = lid + i * {WG}u;
    if (k < {s.k}u) {{ let v = ld_X(P[2] + k); xs[k] = v; ss += v * v; nwv[i] = ld_NW(P[3] + k); }}
  }}
{total}
  let r = inverseSqrt(tot / f32(K) + bitcast<f32>(P[4]));
  workgroupBarrier();
  for (var i = 0u; i < {ni}u; i++) {{
    let k = lid + i * {WG}u;
    if (k < {s.k}u) {{ xs[k] = {xdt.round(f"nwv[i] * {rnd.round('xs[k] * r')}")}; }}
  }}"""
    if s.merge:  # x merged from the attention's partials (and the new token written by one workgroup)
        ns, dv = s.merge[0], s.merge[1]
        mdecl, mstage = staged_merge_wgsl(s.k // dv, ns, dv, WG, "xs[{}] = " + xdt.round("{}") + ";")
        return mdecl, f"""{mstage}
  if ({GROUP_ID} == 0u) {{
    for (var kh = 0u; kh < P[{_attention_words(s) + 6}u]; kh++) {{ write_new(0u, kh, lid); }}
  }}"""
    if s.direct:  # no staging: x's loads go out with the weights' (and no barrier waits on them)
        return "", ""
    return "", f"  for (var k = lid; k < {s.k}u; k += {WG}u) {{ xs[k] = ld_X(P[2] + k); }}"


def _column_sums(s: MatvecSpec, lanes: int) -> str:
    """Statements adding up each column's `acc` (and `acc2`) over its `lanes` threads into ra
    (rb): a tree through workgroup memory (log2(lanes) barriers), or with subgroups one
    subgroupAdd per subgroup and the lane-0 thread adding the column's subgroup sums."""
    tree = f"""    red[lid] = acc;
    red2[lid] = acc2;
    workgroupBarrier();
    for (var t = {lanes // 2}u; t > 0u; t = t >> 1u) {{
      if (lane < t) {{
        red[lid] = red[lid] + red[lid + t];
        red2[lid] = red2[lid] + red2[lid + t];
      }}
      workgroupBarrier();
    }}
    ra = red[lid];
    rb = red2[lid];"""
    if s.subgroups is None:
        return f"  {{\n{tree}\n  }}"
    return f"""  if (sgs <= {lanes}u && {lanes}u % sgs == 0u) {{
    let sa = subgroupAdd(acc);
    {"let sb = subgroupAdd(acc2);" if s.gated else ""}
    if (lid % sgs == 0u) {{ red[lid / sgs] = sa; {"red2[lid / sgs] = sb;" if s.gated else ""} }}
    workgroupBarrier();
    for (var t = 0u; t < {lanes}u / sgs; t++) {{
      ra += red[lid / sgs + t];
      {"rb += red2[lid / sgs + t];" if s.gated else ""}
    }}
  }} else {{
{tree}
  }}"""


def matvec_kernel(s: MatvecSpec) -> Kernel:
    """One row of x: grid_rows(ceil(columns / s.cols))."""
    xdt, wdt = dtype(s.x), dtype(s.w)
    WG = s.wg  # (the WGSL below names it so)
    cols, lanes = s.cols, WG // s.cols
    sig, loads, stores = _bindings(s)
    mdecl, stage = _stage(s)
    u = vec4_elems(wdt)
    unpack = "".join(vec4_reader(wdt, f"unit_W{i}", f"W{i}") for i in range(s.segments))
    if s.gated:
        unpack += vec4_reader(wdt, "unit_G", "G")
    if s.direct:
        unpack += vec4_reader(xdt, "unit_X", "X4")
    xv = "xv[j]" if s.direct else f"xs[kc * {u}u + j]"

    # which weight a column reads, and where its result goes (P[5 + SEG * i] ...)
    def seg(i: int, k: int) -> str:
        return f"P[{5 + SEG * i + k}u]"

    pick = "".join(f"  if (n >= {seg(i, 0)}) {{ si = {i}u; }}\n" for i in range(1, s.segments))
    # a constant trip count (units past the row's end read clamped and weighed 0) lets the
    # driver unroll the loop and issue a thread's weight loads together
    ku = s.k // u
    iters = -(-ku // lanes)
    ok = "k4 < KU" if ku % lanes else "true"
    early = iters <= s.early
    dot_cases = []
    for i in range(s.segments):
        dot_cases.append(f"""      if (si == {i}u) {{
        let w = {"unit_W0_dec(rw[t])" if early else f"unit_W{i}(wb + kc)"};
        var part = 0.0;
        for (var j = 0u; j < {u}u; j++) {{ part += w[j] * {xv}; }}
        acc += select(0.0, part, {ok});
      }}""")
    gate = f"""
      let g = {"unit_G_dec(rg[t])" if early else "unit_G(gb + kc)"};
      var part2 = 0.0;
      for (var j = 0u; j < {u}u; j++) {{ part2 += g[j] * {xv}; }}
      acc2 += select(0.0, part2, {ok});""" if s.gated else ""
    store_cases = []
    for i, (y, b) in enumerate(zip(s.ys, s.biases)):
        v = "ra"
        if s.gated:
            v = "rb / (1.0 + exp(-rb)) * ra"
        lines = [f"    var v = {v};"]
        if b is not None:
            lines.append(f"    v += ld_B{i}({seg(i, 3)} + c);")
        if s.residual is not None:
            lines.append(f"    v += ld_R(P[{5 + SEG * s.segments}u] + c);")
        lines.append(f"    st_Y{i}({seg(i, 4)} + c, {dtype(y).convert('v', 'f32')});")
        store_cases.append(f"  if (si == {i}u) {{\n" + "\n".join(lines) + "\n  }")
    early_loads = ""
    if early:  # this thread's weight units (and gate units), raw, before the staging
        seg_loads = " else ".join(f"if (si == {i}u) {{ rw[t] = W{i}[wb + kc]; }}" for i in range(s.segments))
        early_loads = f"""  var rw: array<vec4<u32>, {iters}>;
  {f"var rg: array<vec4<u32>, {iters}>;" if s.gated else ""}
  if (n < P[1]) {{
    for (var t = 0u; t < {iters}u; t++) {{
      let kc = min(lane + t * {lanes}u, KU - 1u);
      {seg_loads}
      {"rg[t] = G[gb + kc];" if s.gated else ""}
    }}
  }}
"""
    reduce = _column_sums(s, lanes)
    main_args = MAIN_ARGS + (", @builtin(subgroup_size) sgs: u32" if s.subgroups is not None else "")
    src = WGSL_DTYPE_HELPERS + loads + stores + unpack + f"""
const KU: u32 = {ku}u;
{"" if s.direct else f"var<workgroup> xs: array<f32, {s.k}>;"}
{mdecl}
var<workgroup> red: array<f32, {WG}>;
var<workgroup> red2: array<f32, {WG}>;
@compute @workgroup_size({WG})
fn main({main_args}) {{
  let K = P[0];
  let lane = lid % {lanes}u;
  let n = {GROUP_ID} * {cols}u + lid / {lanes}u;
  var si = 0u;
{pick}  let c = n - P[5u + {SEG}u * si];
  let wb = P[{5 + 1}u + {SEG}u * si] + c * P[{5 + 2}u + {SEG}u * si];
  let gb = P[{5 + SEG * s.segments + 1}u] + c * P[{5 + SEG * s.segments + 2}u];
{early_loads}{stage}
  {"" if s.direct else "workgroupBarrier();"}
  var acc = 0.0;
  var acc2 = 0.0;
  if (n < P[1]) {{
    for (var t = 0u; t < {iters}u; t++) {{
      let k4 = lane + t * {lanes}u;
      let kc = min(k4, KU - 1u);
{"      let xv = unit_X(P[2] + kc);" if s.direct else ""}
{chr(10).join(dot_cases)}{gate}
    }}
  }}
  workgroupBarrier();
  var ra = 0.0;  // the column's sums (of the gate's products in rb)
  var rb = 0.0;
{reduce}
  if (lane != 0u || n >= P[1]) {{ return; }}
{chr(10).join(store_cases)}
}}
"""
    k = sig.kernel("matvec", src)
    return Kernel(k.name, s.subgroups + "\n" + k.wgsl, k.bindings) if s.subgroups else k


