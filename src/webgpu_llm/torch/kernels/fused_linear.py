"""Linear layers with fused ends, for the compiler.

    y_s = norm(x) W_s^T (+ b_s)    for up to three weights sharing x (Q, K and V)
    y   = norm(x) W^T (+ b) (+ r)  (a residual connection)
    y   = silu(norm(x) Wg^T) * (norm(x) Wu^T)   (SwiGLU)

where norm is an optional RMSNorm of x (as the transformers module computes it). For one row
of x (decode), a dedicated mat-vec streams the weights: the threads that share an output
column read its weight row 16 bytes at a time and x's matching 16 bytes beside it (where x is
normalised first, x is staged and normalised once in workgroup memory instead); bias, residual
and gate are applied before the single store. A workgroup takes fewer columns (more threads
each) when there are few columns, to keep enough loads in flight. A Qwen2 layer's linear
algebra is then four launches. Other shapes go through the general matmul kernel.

The output projection after a split-key attention can take x as the attention's partials
(`Merged`): it merges them as it stages x, and writes the new token into the KV caches, so
the attention's own merge launch is not needed. Where x is staged, each thread requests its
weights before the staging (`EARLY`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..context import ctx
from ..dtypes import WGSL_DTYPE_HELPERS, dtype_of
from ..tensors import empty
from . import elementwise as ew
from .attention import append_wgsl, staged_merge_wgsl
from .common import (
    GROUP_ID,
    MAIN_ARGS,
    binding,
    element_store,
    grid_rows,
    loader,
    storage_decl,
    vec4_elems,
    vec4_reader,
)
from .matmul import matmul
from .rms_norm import rms_norm

_ADD = ew.Pointwise("add", "a0 + a1", "f32", "f32")
_SILU_MUL = ew.Pointwise("silu_mul", "a0 / (1.0 + exp(-a0)) * a1", "f32", "f32")
WG = 256  # threads per workgroup, shared by 2 to 32 output columns (see columns_per_group)
# Where x is staged (normalised, or merged from attention partials), each thread requests all
# its weight units before the staging when they are at most this many: their memory latency
# then overlaps the staging's instead of following it (0: never)
EARLY = 4
# (threads per workgroup, output columns per workgroup) for a mat-vec of (columns, input
# length), in place of the defaults above: the benchmark's sweeps set these (set_shapes)
SHAPES: dict[tuple[int, int], tuple[int, int]] = {}
MAX_K = 7168  # x staged in workgroup memory as f32 (28 KiB of the 32 KiB WebGPU guarantees)
SEG = 5  # parameter words per weight: first column, weight offset and row stride (16-byte units),
#          bias offset, output offset


@dataclass(frozen=True)
class Norm:
    """An RMSNorm applied to x before the product: rms_norm(x) * w."""

    w: torch.Tensor
    eps: float


@dataclass(frozen=True)
class Merged:
    """x given as one query row's attention partials (attention.partials, keys split in `ns`)
    and the new token to write into the caches: `tensors` = (k cache, v cache, new key, new
    value, position[, cos, sin]), `params` the attention launch's parameter block."""

    part: torch.Tensor
    params: bytes
    ns: int
    heads: int
    dv: int
    d: int
    dtype: torch.dtype  # the attention output's (x is rounded to it)
    tensors: tuple[torch.Tensor, ...]

    @property
    def k(self) -> int:
        return self.heads * self.dv


@dataclass(frozen=True)
class _Spec:
    """Everything the WGSL depends on: dtypes of the operands and which ends are fused."""

    x: torch.dtype
    w: torch.dtype
    ys: tuple[torch.dtype, ...]
    biases: tuple[torch.dtype | None, ...]
    residual: torch.dtype | None
    gated: bool
    norm: torch.dtype | None  # dtype of the norm weight
    norm_round: torch.dtype | None  # dtype the normalised row is rounded to before the weight
    cols: int  # output columns per workgroup
    k: int  # staged inputs: workgroup memory is sized (and zeroed by WebGPU) per layer width
    subgroups: str | None = None  # the WGSL enable line where subgroup reductions are used
    direct: bool = False  # read x's 16-byte units from memory beside the weights, not staged
    wg: int = WG  # threads per workgroup
    # x is one query row's attention output, merged from its key splits' partials as it is
    # staged (attention.staged_merge_wgsl): (splits, head size of the values, of the keys, and the
    # dtypes of the new token's write into the caches: attention.append_wgsl)
    merge: tuple[int, int, int, tuple[torch.dtype, ...]] | None = None
    early: bool = False  # a staged x: each thread requests its weights before the staging (see EARLY)

    @property
    def segments(self) -> int:
        return len(self.ys)


def columns_per_group(n: int, gated: bool = False) -> int:
    """Up to 32 columns per workgroup for wide layers (the LM head: each workgroup stages and
    normalises x once for all its columns; 8 -> 32 took a 0.5B head from 128 to 89 µs on an
    H200, bench/NOTES.md round 37), down to 4 while that leaves 256 workgroups and 2 below
    (enough workgroups to fill the GPU). A gated mat-vec reads two weight rows a column and
    takes at least 16 columns (16 threads a column): rounds 104-106 measured both on H200
    compiled steps, QKV of the 0.5B and 1.5B shapes 10-65 µs faster at 4 than at 2, gate/up
    25-170 µs at 16 than at 4 or 8."""
    cols = next((c for c in (32, 16, 8) if n // c >= 1024), 4 if n // 4 >= 256 else 2)
    return max(cols, 16) if gated else cols


def set_shapes(shapes: dict[tuple[int, int], tuple[int, int]]) -> None:
    """From now on, mat-vecs of (columns, input length) in `shapes` take its (threads per
    workgroup, columns per workgroup), the others the defaults ({}: all of them). The launch
    plans are cleared: they would repeat the kernels chosen before."""
    from ..ops import plans  # (the ops import this module)

    SHAPES.clear()
    SHAPES.update(shapes)
    plans.clear()


def default_shape(n: int, k: int, gated: bool = False) -> tuple[int, int]:
    """(threads per workgroup, output columns per workgroup) of a mat-vec with n columns of k
    inputs, unless SHAPES says otherwise."""
    return WG, columns_per_group(n, gated)


def matvec_shape(n: int, k: int, gated: bool = False) -> tuple[int, int]:
    """(threads per workgroup, output columns per workgroup) of a mat-vec with n columns."""
    return SHAPES.get((n, k)) or default_shape(n, k, gated)


def _bindings(s: _Spec) -> tuple[list[str], str, str, int]:
    """(binding declarations, loader and attention helpers, store helpers, storage bindings
    without the parameter block)."""
    xdt = dtype_of(s.x)
    decls, loads, stores = [], "" if s.direct or s.merge else loader(xdt, "X", "f32"), ""

    def add(name: str, vec4: bool = False, write: bool = False, atomic: bool = False) -> None:
        if vec4:  # weights: read 16 bytes at a time
            decls.append(f"@group(0) @binding({len(decls)}) var<storage, read> {name}: array<vec4<u32>>;")
        else:
            decls.append(storage_decl(len(decls), name, write, atomic))

    for i, y in enumerate(s.ys):
        atomic, st = element_store(dtype_of(y), f"Y{i}")
        add(f"Y{i}", write=True, atomic=atomic)
        stores += st
    if s.merge:
        decls.append(f"@group(0) @binding({len(decls)}) var<storage, read> S: array<f32>;")
    else:
        add("X4" if s.direct else "X", vec4=s.direct)
    for i in range(s.segments):
        add(f"W{i}", vec4=True)
    if s.gated:
        add("G", vec4=True)
    for i, b in enumerate(s.biases):
        if b is not None:
            add(f"B{i}")
            loads += loader(dtype_of(b), f"B{i}", "f32")
    if s.residual is not None:
        add("R")
        loads += loader(dtype_of(s.residual), "R", "f32")
    if s.norm is not None:
        add("NW")
        loads += loader(dtype_of(s.norm), "NW", "f32")
    if s.merge:
        _, dv, d, app = s.merge
        names, helpers, write_new = append_wgsl(app, d, dv, _attention_words(s), s.wg)
        for name in names:
            add(name, write=name in ("K", "V"))
        loads += f"const NEG: f32 = -3.4028234663852886e38;\n{helpers}{write_new}"
    add("P")
    return decls, loads, stores, len(decls) - 1


def _attention_words(s: _Spec) -> int:
    """Where the attention's parameter words start in the block (after this kernel's own)."""
    return 5 + SEG * s.segments + 3


def _stage(s: _Spec) -> tuple[str, str]:
    """(workgroup declarations, statements) putting x into workgroup memory `xs` as the dot
    products read it: normalised, merged from attention partials, copied, or (direct) not at
    all. x's length is a constant of the kernel: the staging loops unroll, their loads go out
    together."""
    xdt, WG = dtype_of(s.x), s.wg  # (the WGSL names it so)
    if s.norm is not None:
        rnd = dtype_of(s.norm_round or s.x)
        if s.subgroups is not None:  # one subgroupAdd, one barrier (not log2(WG) of them)
            total = f"""  let sss = subgroupAdd(ss);
  if (lid % sgs == 0u) {{ red[lid / sgs] = sss; }}
  workgroupBarrier();
  var tot = 0.0;
  for (var t = 0u; t < {WG}u / sgs; t++) {{ tot += red[t]; }}"""
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


def _column_sums(s: _Spec, lanes: int) -> str:
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


def _wgsl(s: _Spec) -> tuple[str, int]:
    xdt, wdt = dtype_of(s.x), dtype_of(s.w)
    WG = s.wg  # (the WGSL below names it so)
    cols, lanes = s.cols, WG // s.cols
    decls, loads, stores, nb = _bindings(s)
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
    early = s.early and iters <= EARLY
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
        lines.append(f"    st_Y{i}({seg(i, 4)} + c, {dtype_of(y).convert('v', 'f32')});")
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
    src = ((s.subgroups + "\n") if s.subgroups else "") + "\n".join(decls) + "\n" + WGSL_DTYPE_HELPERS + loads + stores + unpack + f"""
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
    return src, nb


def _weights_fit(k: int, weights: Sequence[torch.Tensor], staged: bool = True) -> bool:
    """k-contiguous weights of one dtype that 16-byte loads can read, for an x of k values
    (which fits in workgroup memory where it is staged)."""
    if staged and k > MAX_K:
        return False
    for w in weights:
        u = vec4_elems(dtype_of(w.dtype))
        if (w.dim() != 2 or w.stride(1) != 1 or k % u or w.stride(0) % u or w.storage_offset() % u
                or w.dtype != weights[0].dtype):
            return False
    return True


def _direct(x: torch.Tensor, w: torch.Tensor, norm: Norm | None) -> bool:
    """Does the mat-vec read x in 16-byte units beside the weights (not staged: any length)?"""
    return norm is None and x.dtype == w.dtype and x.storage_offset() % vec4_elems(dtype_of(w.dtype)) == 0


def _fast(x: torch.Tensor, weights: Sequence[torch.Tensor], norm: Norm | None) -> bool:
    """One contiguous row of x, and weights the mat-vec reads (`_weights_fit`)."""
    k = x.shape[-1]
    return (x.numel() == k and x.is_contiguous() and x.dtype.is_floating_point
            and _weights_fit(k, weights, not _direct(x, weights[0], norm)))


def _ends_fit(y: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None) -> bool:
    """A contiguous output, and a bias and a residual the mat-vec's store adds."""
    res_ok = residual is None or (residual.is_contiguous() and residual.shape == y.shape)
    return res_ok and _vector(bias) and y.is_contiguous()


def _matvec(ys: Sequence[torch.Tensor], x: torch.Tensor | Merged, ws: Sequence[torch.Tensor],
            biases: Sequence[torch.Tensor | None], gate: torch.Tensor | None = None,
            residual: torch.Tensor | None = None, norm: Norm | None = None) -> None:
    merged = x if isinstance(x, Merged) else None
    k = merged.k if merged else x.shape[-1]
    u = vec4_elems(dtype_of(ws[0].dtype))
    n_total = sum(w.shape[0] for w in ws)
    wg, cols = matvec_shape(n_total, k, gate is not None)
    direct = not merged and _direct(x, ws[0], norm)
    merge = None
    if merged:
        dts = tuple(t.dtype for t in merged.tensors[:5])
        merge = (merged.ns, merged.dv, merged.d, (*dts, merged.tensors[5].dtype if len(merged.tensors) > 5 else None))
    spec = _Spec(x.dtype, ws[0].dtype, tuple(y.dtype for y in ys), tuple(b.dtype if b is not None else None
                                                                        for b in biases),
                 residual.dtype if residual is not None else None, gate is not None,
                 norm.w.dtype if norm is not None else None, x.dtype if norm is not None else None,
                 cols, k, ctx().gpu.subgroups_wgsl(), direct=direct, wg=wg, merge=merge,
                 early=EARLY > 0 and not direct and (norm is not None or merged is not None))
    stream = ctx().stream
    kernel = stream.kernel(("matvec", spec), lambda: ("matvec", *_wgsl(spec)))
    eps = struct.unpack("<I", struct.pack("<f", norm.eps if norm is not None else 0.0))[0]
    x_at = 0 if merged else x.storage_offset() // u if direct else x.storage_offset()
    words = [k, n_total, x_at, norm.w.storage_offset() if norm is not None else 0, eps]
    first = 0
    for w, b, y in zip(ws, biases, ys):
        words += [first, w.storage_offset() // u, w.stride(0) // u, b.storage_offset() if b is not None else 0,
                  y.storage_offset()]
        first += w.shape[0]
    words += [residual.storage_offset() if residual is not None else 0,
              gate.storage_offset() // u if gate is not None else 0, gate.stride(0) // u if gate is not None else 0]
    binds = [binding(y) for y in ys] + [binding(merged.part if merged else x)] + [binding(w) for w in ws]
    binds += [binding(t) for t in (gate, *biases, residual, norm.w if norm is not None else None) if t is not None]
    params = struct.pack(f"<{len(words)}I", *words)
    if merged:
        binds += [binding(t) for t in merged.tensors]
        params += merged.params
    stream.launch(kernel, binds, params, grid_rows(-(-n_total // spec.cols)))


def merged_linear_ok(k: int, w: torch.Tensor, bias: torch.Tensor | None, residual: torch.Tensor | None,
                     y: torch.Tensor) -> bool:
    """Can `merged_linear` run this (one row of k inputs, weights that 16-byte loads read)?"""
    return _weights_fit(k, [w]) and w.shape[1] == k and y.numel() == w.shape[0] and _ends_fit(y, bias, residual)


def merged_linear(y: torch.Tensor, x: Merged, w: torch.Tensor, bias: torch.Tensor | None = None,
                  residual: torch.Tensor | None = None) -> torch.Tensor:
    """y = merge(x) @ w.T (+ bias) (+ residual), merge(x) the attention output whose partials x
    holds, and the new token written into the caches (see merged_linear_ok)."""
    _matvec([y], x, [w], [bias], residual=residual)
    return y


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def _normed(x: torch.Tensor, norm: Norm | None) -> torch.Tensor:
    if norm is None:
        return x
    return rms_norm(empty(x.shape, torch.promote_types(x.dtype, norm.w.dtype)), x, norm.w, norm.eps)


def _vector(t: torch.Tensor | None) -> bool:
    return t is None or (t.dim() == 1 and t.stride(0) == 1)


def linear(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
           residual: torch.Tensor | None = None, norm: Norm | None = None) -> torch.Tensor:
    """y = norm(x) @ w.T (+ bias) (+ residual); y has x's leading shape and w.shape[0] columns."""
    if _fast(x, [w], norm) and _ends_fit(y, bias, residual):
        _matvec([y], x, [w], [bias], residual=residual, norm=norm)
        return y
    x = _normed(x, norm)
    y3 = _rows(y).unsqueeze(0)
    c = None
    if bias is not None:
        c = bias.expand(y3.shape)
    elif residual is not None:
        c = _rows(residual.expand(y.shape)).unsqueeze(0)
    matmul(y3, _rows(x).unsqueeze(0), w.t().unsqueeze(0), c)
    if bias is not None and residual is not None:
        ew.run(_ADD, y, [y, residual])
    return y


def linear_group(ys: Sequence[torch.Tensor], x: torch.Tensor, ws: Sequence[torch.Tensor],
                 biases: Sequence[torch.Tensor | None], norm: Norm | None = None) -> None:
    """ys[i] = norm(x) @ ws[i].T (+ biases[i]): several projections of one input, one launch."""
    if _fast(x, ws, norm) and all(_vector(b) for b in biases) and all(y.is_contiguous() for y in ys):
        _matvec(ys, x, ws, biases, norm=norm)
        return
    xn = _normed(x, norm)
    for y, w, b in zip(ys, ws, biases):
        linear(y, xn, w, b)


def gated_linear(y: torch.Tensor, x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor,
                 norm: Norm | None = None) -> torch.Tensor:
    """y = silu(norm(x) @ w_gate.T) * (norm(x) @ w_up.T)."""
    if _fast(x, [w_up, w_gate], norm) and y.is_contiguous():
        _matvec([y], x, [w_up], [None], gate=w_gate, norm=norm)
        return y
    x = _normed(x, norm)
    g = empty(y.shape, y.dtype)
    linear(g, x, w_gate)
    linear(y, x, w_up)
    ew.run(_SILU_MUL, y, [g, y])
    return y
