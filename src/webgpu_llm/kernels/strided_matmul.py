"""Batched matrix products y[b] = alpha * a[b] @ w[b] + beta * c[b] over strided operands.

Three kernels: a mat-vec for a few rows (decode: every weight element is read once, by lanes
that walk k together, 16 bytes at a time when w is k-contiguous, as nn.Linear weights are),
a 64x64-tiled matmul for prompts, and the same on the f16 tiles of the GPU's matrix units.
All accumulate in f32 and take f32/f16/bf16 inputs.

Parameter block (u32 words, f32 for alpha/beta):
0 M, 1 N, 2 K, 3 batch, 4..7 a (off, sb, sm, sk), 8..11 w (off, sb, sk, sn),
12..15 c (off, sb, sm, sn), 16..19 y (off, sb, sm, sn), 20 alpha, 21 beta, 22 column groups
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.program import Kernel
from .common import Signature, f16_clamped
from .dtypes import WGSL_DTYPE_HELPERS, dtype, element_store, loader, vec4_elems, vec4_reader
from .mma import MATRIX_HEAD, TileShape, tile_code
from .strided import GROUP_ID, MAIN_ARGS, words


@dataclass(frozen=True)
class MatmulSpec:
    """Dtypes of the operands (c: None without the `beta * c` term)."""

    a: str
    w: str
    y: str
    c: str | None


@dataclass(frozen=True)
class GemvSpec(MatmulSpec):
    wvec: bool = False  # w k-contiguous and 16-byte aligned: read 16 bytes at a time
    rows: int = 1  # rows of a (at most; a constant so the accumulators stay in registers)
    lanes: int = 32  # threads that share one output column
    cols: int = 8  # output columns per workgroup


def _epilogue(bias: bool) -> str:
    if bias:
        return "bitcast<f32>(P[20]) * acc + bitcast<f32>(P[21]) * ld_C(P[12] + b * P[13] + m * P[14] + n * P[15])"
    return "bitcast<f32>(P[20]) * acc"


def _decls(s: MatmulSpec, wvec: bool) -> tuple[Signature, str]:
    adt, wdt, ydt = dtype(s.a), dtype(s.w), dtype(s.y)
    atomic, store = element_store(ydt)
    sig = words(words(Signature(), "Y", write=True, atomic=atomic), "A")
    if wvec:  # only 16-byte loads of w
        sig.storage("W4", "array<vec4<u32>>")
    else:
        words(sig, "W")
    if s.c is not None:
        words(sig, "C")
    words(sig, "P")
    src = WGSL_DTYPE_HELPERS + loader(adt, "A", "f32")
    if not wvec:
        src += loader(wdt, "W", "f32")
    if s.c is not None:
        src += loader(dtype(s.c), "C", "f32")
    return sig, src + store


def gemv_kernel(s: GemvSpec) -> Kernel:
    """grid: grid_rows(column groups (P[22]) * batch)."""
    sig, src = _decls(s, s.wvec)
    lanes, cols, rows = s.lanes, s.cols, s.rows
    wg = lanes * cols
    if s.wvec:
        wdt = dtype(s.w)
        u = vec4_elems(wdt)
        src += vec4_reader(wdt)
        inner = f"""  let wbase = (P[8] + b * P[9] + n * P[11]) / {u}u;
    for (var k4 = lane; k4 < K / {u}u; k4 += {lanes}u) {{
      let w = wunit(wbase + k4);
      for (var m = 0u; m < M; m++) {{
        let ab = P[4] + b * P[5] + m * P[6] + k4 * {u}u * P[7];
        var s = 0.0;
        for (var j = 0u; j < {u}u; j++) {{ s += w[j] * ld_A(ab + j * P[7]); }}
        acc[m] += s;
      }}
    }}"""
    else:
        inner = f"""  for (var k = lane; k < K; k += {lanes}u) {{
      let w = ld_W(P[8] + b * P[9] + k * P[10] + n * P[11]);
      for (var m = 0u; m < M; m++) {{ acc[m] += w * ld_A(P[4] + b * P[5] + m * P[6] + k * P[7]); }}
    }}"""
    src += f"""
var<workgroup> red: array<f32, {wg}>;
@compute @workgroup_size({wg})
fn main({MAIN_ARGS}) {{
  let M = P[0]; let N = P[1]; let K = P[2];
  let g = {GROUP_ID};
  let b = g / P[22];
  let col = lid / {lanes}u;
  let lane = lid % {lanes}u;
  let n = (g % P[22]) * {cols}u + col;
  if (b >= P[3]) {{ return; }}
  var acc: array<f32, {rows}>;
  if (n < N) {{
  {inner}
  }}
  for (var m = 0u; m < {rows}u; m++) {{
    red[lid] = acc[m];
    workgroupBarrier();
    for (var s = {lanes // 2}u; s > 0u; s = s >> 1u) {{
      if (lane < s) {{ red[lid] = red[lid] + red[lid + s]; }}
      workgroupBarrier();
    }}
    if (lane == 0u && n < N && m < M) {{
      let acc = red[lid];
      st_Y(P[16] + b * P[17] + m * P[18] + n * P[19], {dtype(s.y).convert(_epilogue(s.c is not None), "f32")});
    }}
    workgroupBarrier();
  }}
}}
"""
    return sig.kernel("gemv", src)


TM, TN, TK = 64, 64, 16  # the tile: 16x16 threads of 4x4 outputs each, K in steps of 16


@dataclass(frozen=True)
class TiledMatmulSpec(MatmulSpec):
    w_kmajor: bool = False  # w's k stride is 1: tile loads walk k first (coalesced)


def tiled_matmul_kernel(s: TiledMatmulSpec) -> Kernel:
    """grid: (ceil(N / TN), ceil(M / TM), batch)."""
    sig, src = _decls(s, False)
    ydt = dtype(s.y)
    # tile loads: 1024 elements each by 256 threads; pick the mapping that keeps loads coalesced
    wload = ("let kk = e % 16u; let nn = e / 16u;" if s.w_kmajor else "let kk = e / 64u; let nn = e % 64u;")
    src += f"""
var<workgroup> As: array<f32, {TK * TM}>;
var<workgroup> Ws: array<f32, {TK * TN}>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) l3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {{
  let M = P[0]; let N = P[1]; let K = P[2];
  let b = wid.z;
  let m0 = wid.y * {TM}u;
  let n0 = wid.x * {TN}u;
  var acc: array<vec4<f32>, 4>;
  for (var k0 = 0u; k0 < K; k0 += {TK}u) {{
    for (var e = lid; e < {TK * TM}u; e += 256u) {{
      let mm = e / 16u; let kk = e % 16u;
      var v = 0.0;
      if (m0 + mm < M && k0 + kk < K) {{ v = ld_A(P[4] + b * P[5] + (m0 + mm) * P[6] + (k0 + kk) * P[7]); }}
      As[kk * {TM}u + mm] = v;
    }}
    for (var e = lid; e < {TK * TN}u; e += 256u) {{
      {wload}
      var v = 0.0;
      if (n0 + nn < N && k0 + kk < K) {{ v = ld_W(P[8] + b * P[9] + (k0 + kk) * P[10] + (n0 + nn) * P[11]); }}
      Ws[kk * {TN}u + nn] = v;
    }}
    workgroupBarrier();
    for (var kk = 0u; kk < {TK}u; kk++) {{
      let w = vec4<f32>(Ws[kk * {TN}u + l3.x * 4u], Ws[kk * {TN}u + l3.x * 4u + 1u],
                        Ws[kk * {TN}u + l3.x * 4u + 2u], Ws[kk * {TN}u + l3.x * 4u + 3u]);
      for (var i = 0u; i < 4u; i++) {{ acc[i] += As[kk * {TM}u + l3.y * 4u + i] * w; }}
    }}
    workgroupBarrier();
  }}
  for (var i = 0u; i < 4u; i++) {{
    let m = m0 + l3.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {{
      let n = n0 + l3.x * 4u + j;
      if (m < M && n < N) {{
        let acc = acc[i][j];
        st_Y(P[16] + b * P[17] + m * P[18] + n * P[19], {ydt.convert(_epilogue(s.c is not None), "f32")});
      }}
    }}
  }}
}}
"""
    return sig.kernel("matmul", src)


def tile_matmul_kernel(s: TiledMatmulSpec, shape: TileShape = TileShape(), emulate: bool = False) -> Kernel:
    """The tiled matmul on the f16 tiles of the matrix units (kernels/mma.py `tile_code`): a
    and w rounded to f16 (clamped to its range) as they are staged 32 inputs at a time, sums in
    f32; a workgroup of shape.sm x shape.sn subgroups takes shape.bm rows of a and shape.bn
    columns of w. `emulate`: the same products without matrix units (tests on llvmpipe).
    grid: tile_matmul_grid."""
    assert not shape.acc16, "f32 sums only"
    sig, src = _decls(s, False)
    sm, sn, tm, tn, bm, bn, wg = shape.sm, shape.sn, shape.tm, shape.tn, shape.bm, shape.bn, shape.wg
    acc_decl, products, store = tile_code(shape, emulate)
    # staged rows of 32 inputs: a walks k first; w too where it is k-contiguous (nn.Linear's)
    kw = 32 * shape.ku  # inputs a step
    wload = f"let nn = e / {kw}u; let kk = e % {kw}u;" if s.w_kmajor else f"let kk = e / {bn}u; let nn = e % {bn}u;"
    sg_param = "" if emulate else ", @builtin(subgroup_id) sgid: u32"
    src += f"""
const XH: u32 = {shape.xh}u;
var<workgroup> xh: array<f16, {bm * shape.xh}>;  // [row of a][k]
var<workgroup> wh: array<f16, {bn * shape.xh}>;  // [column of w][k]
var<workgroup> cs: array<f32, {sm * sn * 256}>;  // a tile of each subgroup, for the output
fn out(b: u32, m: u32, n: u32, acc: f32) {{
  st_Y(P[16] + b * P[17] + m * P[18] + n * P[19], {dtype(s.y).convert(_epilogue(s.c is not None), "f32")});
}}
@compute @workgroup_size({wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32{sg_param}) {{
  let M = P[0]; let N = P[1]; let K = P[2];
  let b = wid.z;
  let m0 = wid.y * {bm}u;
  let n0 = wid.x * {bn}u;
{acc_decl}
  for (var k0 = 0u; k0 < K; k0 += {kw}u) {{
    for (var e = lid; e < {bm * kw}u; e += {wg}u) {{
      let mm = e / {kw}u; let kk = e % {kw}u;
      var v = 0.0;
      if (m0 + mm < M && k0 + kk < K) {{ v = ld_A(P[4] + b * P[5] + (m0 + mm) * P[6] + (k0 + kk) * P[7]); }}
      xh[mm * XH + kk] = f16({f16_clamped('v')});
    }}
    for (var e = lid; e < {bn * kw}u; e += {wg}u) {{
      {wload}
      var v = 0.0;
      if (n0 + nn < N && k0 + kk < K) {{ v = ld_W(P[8] + b * P[9] + (k0 + kk) * P[10] + (n0 + nn) * P[11]); }}
      wh[nn * XH + kk] = f16({f16_clamped('v')});
    }}
    workgroupBarrier();
{products}
    workgroupBarrier();
  }}
  // each tile through the scratch of its subgroup: 16 x 16 sums, 8 a thread of the subgroup
  for (var n = 0u; n < {tm * tn}u; n++) {{
{store}
    workgroupBarrier();
    for (var v = 0u; v < 8u; v++) {{
      let e = lane + 32u * v;
      let m = m0 + ts + (n / {tn}u) * 16u + e / 16u;
      let col = n0 + rs + (n % {tn}u) * 16u + e % 16u;
      if (m < M && col < N) {{ out(b, m, col, cs[s * 256u + e]); }}
    }}
    workgroupBarrier();
  }}
}}
"""
    name = f"matmul_f16_tiles_{sm}x{sn}x{tm}x{tn}{f'_k{shape.ku}' if shape.ku > 1 else ''}{'_emulated' if emulate else ''}"
    k = sig.kernel(name, src)
    return Kernel(k.name, "enable f16;\n" + ("" if emulate else MATRIX_HEAD) + k.wgsl, k.bindings)


def tile_matmul_grid(m: int, n: int, batch: int, shape: TileShape = TileShape()) -> tuple[int, int, int]:
    return (-(-n // shape.bn), -(-m // shape.bm), batch)
