"""Batched matrix products y[b] = alpha * a[b] @ w[b] + beta * c[b] over strided operands.

Two kernels: a mat-vec for a few rows (decode: every weight element is read once, by lanes
that walk k together, 16 bytes at a time when w is k-contiguous, as nn.Linear weights are),
and a 64x64-tiled matmul for prompts. Both accumulate in f32 and take f32/f16/bf16 inputs.
"""

from __future__ import annotations

import struct

import torch

from ..context import ctx
from ..dtypes import WGSL_DTYPE_HELPERS, DType, dtype_of
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

GEMV_ROWS = 8  # up to this many rows use the mat-vec kernel
LANES = 32  # threads that share one output column in the mat-vec
COLS = 8  # output columns per mat-vec workgroup

# Parameter block (u32 words, f32 for alpha/beta):
# 0 M, 1 N, 2 K, 3 batch, 4..7 a (off, sb, sm, sk), 8..11 w (off, sb, sk, sn),
# 12..15 c (off, sb, sm, sn), 16..19 y (off, sb, sm, sn), 20 alpha, 21 beta, 22 column groups
_A, _W, _C, _Y = 4, 8, 12, 16


def _epilogue(bias: bool) -> str:
    if bias:
        return "bitcast<f32>(P[20]) * acc + bitcast<f32>(P[21]) * ld_C(P[12] + b * P[13] + m * P[14] + n * P[15])"
    return "bitcast<f32>(P[20]) * acc"


def _decls(adt: DType, wdt: DType, ydt: DType, cdt: DType | None, wvec: bool) -> tuple[str, int]:
    atomic, store = element_store(ydt)
    decls = [storage_decl(0, "Y", write=True, atomic=atomic), storage_decl(1, "A")]
    if wvec:  # only 16-byte loads of w
        decls.append("@group(0) @binding(2) var<storage, read> W4: array<vec4<u32>>;")
    else:
        decls.append(storage_decl(2, "W"))
    nb = 3
    if cdt is not None:
        decls.append(storage_decl(nb, "C"))
        nb += 1
    decls.append(storage_decl(nb, "P"))
    src = "\n".join(decls) + "\n" + WGSL_DTYPE_HELPERS + loader(adt, "A", "f32")
    if not wvec:
        src += loader(wdt, "W", "f32")
    if cdt is not None:
        src += loader(cdt, "C", "f32")
    return src + store, nb


def _gemv_wgsl(adt: DType, wdt: DType, ydt: DType, cdt: DType | None, wvec: bool, rows: int) -> tuple[str, int]:
    src, nb = _decls(adt, wdt, ydt, cdt, wvec)
    wg = LANES * COLS
    if wvec:
        u = vec4_elems(wdt)
        src += vec4_reader(wdt)
        inner = f"""  let wbase = (P[8] + b * P[9] + n * P[11]) / {u}u;
    for (var k4 = lane; k4 < K / {u}u; k4 += {LANES}u) {{
      let w = wunit(wbase + k4);
      for (var m = 0u; m < M; m++) {{
        let ab = P[4] + b * P[5] + m * P[6] + k4 * {u}u * P[7];
        var s = 0.0;
        for (var j = 0u; j < {u}u; j++) {{ s += w[j] * ld_A(ab + j * P[7]); }}
        acc[m] += s;
      }}
    }}"""
    else:
        inner = f"""  for (var k = lane; k < K; k += {LANES}u) {{
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
  let col = lid / {LANES}u;
  let lane = lid % {LANES}u;
  let n = (g % P[22]) * {COLS}u + col;
  if (b >= P[3]) {{ return; }}
  var acc: array<f32, {rows}>;
  if (n < N) {{
  {inner}
  }}
  for (var m = 0u; m < {rows}u; m++) {{
    red[lid] = acc[m];
    workgroupBarrier();
    for (var s = {LANES // 2}u; s > 0u; s = s >> 1u) {{
      if (lane < s) {{ red[lid] = red[lid] + red[lid + s]; }}
      workgroupBarrier();
    }}
    if (lane == 0u && n < N && m < M) {{
      let acc = red[lid];
      st_Y(P[16] + b * P[17] + m * P[18] + n * P[19], {ydt.convert(_epilogue(cdt is not None), "f32")});
    }}
    workgroupBarrier();
  }}
}}
"""
    return src, nb


TM, TN, TK = 64, 64, 16


def _tiled_wgsl(adt: DType, wdt: DType, ydt: DType, cdt: DType | None, w_kmajor: bool) -> tuple[str, int]:
    src, nb = _decls(adt, wdt, ydt, cdt, False)
    # tile loads: 1024 elements each by 256 threads; pick the mapping that keeps loads coalesced
    wload = ("let kk = e % 16u; let nn = e / 16u;" if w_kmajor else "let kk = e / 64u; let nn = e % 64u;")
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
        st_Y(P[16] + b * P[17] + m * P[18] + n * P[19], {ydt.convert(_epilogue(cdt is not None), "f32")});
      }}
    }}
  }}
}}
"""
    return src, nb


def matmul(y: torch.Tensor, a: torch.Tensor, w: torch.Tensor, c: torch.Tensor | None = None,
           alpha: float = 1.0, beta: float = 1.0) -> torch.Tensor:
    """y = alpha * a @ w + beta * c for 3-d operands [batch, M, K] @ [batch, K, N] (batch may
    broadcast with stride 0); c broadcasts to [batch, M, N]."""
    batch, m, k = a.shape
    n = w.shape[2]
    if y.numel() == 0:
        return y
    adt, wdt, ydt = dtype_of(a.dtype), dtype_of(w.dtype), dtype_of(y.dtype)
    cdt = dtype_of(c.dtype) if c is not None else None
    sa, sw, sy = a.stride(), w.stride(), y.stride()
    sc = [0, 0, 0]
    if c is not None:
        sc = [0 if c.shape[i] == 1 else c.stride(i) for i in range(3)]
    words = [m, n, k, batch,
             a.storage_offset(), sa[0] if a.shape[0] > 1 else 0, sa[1], sa[2],
             w.storage_offset(), sw[0] if w.shape[0] > 1 else 0, sw[1], sw[2],
             c.storage_offset() if c is not None else 0, *sc,
             y.storage_offset(), *sy]
    stream = ctx().stream
    binds = [binding(y), binding(a), binding(w)]
    if m <= GEMV_ROWS:
        u = vec4_elems(wdt)
        wvec = (sw[1] == 1 and k % u == 0 and w.storage_offset() % u == 0 and sw[2] % u == 0
                and (w.shape[0] == 1 or sw[0] % u == 0))
        rows = 1 if m == 1 else GEMV_ROWS
        key = ("gemv", adt.name, wdt.name, ydt.name, cdt.name if cdt else None, wvec, rows)
        kernel = stream.kernel(key, lambda: ("gemv", *_gemv_wgsl(adt, wdt, ydt, cdt, wvec, rows)))
        groups = -(-n // COLS)
        grid = grid_rows(groups * batch)
        extra = [groups]
    else:
        kmajor = sw[1] == 1
        key = ("mm", adt.name, wdt.name, ydt.name, cdt.name if cdt else None, kmajor)
        kernel = stream.kernel(key, lambda: ("matmul", *_tiled_wgsl(adt, wdt, ydt, cdt, kmajor)))
        grid = (-(-n // TN), -(-m // TM), batch)
        extra = [0]
    if c is not None:
        binds.append(binding(c))
    params = struct.pack("<20I", *words) + struct.pack("<2f", alpha, beta) + struct.pack("<I", *extra)
    stream.launch(kernel, binds, params, grid)
    return y
