"""Linear layers with fused ends, for the compiler: y = x W^T (+ bias) (+ residual), and the
gated form y = silu(x Wg^T) * (x Wu^T) of SwiGLU MLPs.

For one row of x (decode) a dedicated mat-vec streams the weights: x is staged once in
workgroup memory, LANES threads share an output column and read its weight row 16 bytes at a
time, and the bias, residual and gate are applied before the single store, so a Qwen2 MLP is
two launches instead of five. Other shapes go through the general matmul kernel.
"""

from __future__ import annotations

import struct

import torch

from ..context import ctx
from ..dtypes import WGSL_DTYPE_HELPERS, DType, dtype_of
from ..tensors import empty
from . import elementwise as ew
from .common import GROUP_ID, MAIN_ARGS, binding, element_store, grid_rows, loader, storage_decl
from .matmul import _unit, _unpack, matmul

_ADD = ew.Pointwise("add", "a0 + a1", "f32", "f32")
_SILU_MUL = ew.Pointwise("silu_mul", "a0 / (1.0 + exp(-a0)) * a1", "f32", "f32")
LANES = 32  # threads per output column
COLS = 8  # output columns per workgroup
MAX_K = 7168  # x staged in workgroup memory as f32 (28 KiB of the 32 KiB WebGPU guarantees)

# P: 0 K, 1 N, 2 x offset, 3 y offset, 4 w offset (16-byte units), 5 w row stride (units),
#    6 second weight offset, 7 its row stride, 8 bias offset, 9 residual offset


def _wgsl(xdt: DType, wdt: DType, ydt: DType, bdt: DType | None, rdt: DType | None, gated: bool) -> tuple[str, int]:
    atomic, store = element_store(ydt)
    decls = [storage_decl(0, "Y", write=True, atomic=atomic), storage_decl(1, "X"),
             "@group(0) @binding(2) var<storage, read> W4: array<vec4<u32>>;"]
    nb = 3
    loads = loader(xdt, "X", "f32")
    if gated:
        decls.append(f"@group(0) @binding({nb}) var<storage, read> G4: array<vec4<u32>>;")
        nb += 1
    if bdt is not None:
        decls.append(storage_decl(nb, "B"))
        loads += loader(bdt, "B", "f32")
        nb += 1
    if rdt is not None:
        decls.append(storage_decl(nb, "R"))
        loads += loader(rdt, "R", "f32")
        nb += 1
    decls.append(storage_decl(nb, "P"))
    u = _unit(wdt)
    unpack = _unpack(wdt) + _unpack(wdt).replace("fn wunit", "fn gunit").replace("W4[i]", "G4[i]") if gated \
        else _unpack(wdt)
    dot = f"""
      let w = wunit(wb + k4);
      var s = 0.0;
      for (var j = 0u; j < {u}u; j++) {{ s += w[j] * xs[k4 * {u}u + j]; }}
      acc += s;"""
    if gated:
        dot += f"""
      let g = gunit(gb + k4);
      var t = 0.0;
      for (var j = 0u; j < {u}u; j++) {{ t += g[j] * xs[k4 * {u}u + j]; }}
      acc2 += t;"""
    epi = "let g = red2[lid];\n      v = g / (1.0 + exp(-g)) * v;" if gated else ""
    if bdt is not None:
        epi += "\n      v += ld_B(P[8] + n);"
    if rdt is not None:
        epi += "\n      v += ld_R(P[9] + n);"
    src = "\n".join(decls) + "\n" + WGSL_DTYPE_HELPERS + loads + store + unpack + f"""
var<workgroup> xs: array<f32, {MAX_K}>;
var<workgroup> red: array<f32, {LANES * COLS}>;
var<workgroup> red2: array<f32, {LANES * COLS}>;
@compute @workgroup_size({LANES * COLS})
fn main({MAIN_ARGS}) {{
  let K = P[0];
  for (var k = lid; k < K; k += {LANES * COLS}u) {{ xs[k] = ld_X(P[2] + k); }}
  workgroupBarrier();
  let col = lid / {LANES}u;
  let lane = lid % {LANES}u;
  let n = {GROUP_ID} * {COLS}u + col;
  var acc = 0.0;
  var acc2 = 0.0;
  if (n < P[1]) {{
    let wb = P[4] + n * P[5];
    let gb = P[6] + n * P[7];
    for (var k4 = lane; k4 < K / {u}u; k4 += {LANES}u) {{{dot}
    }}
  }}
  red[lid] = acc;
  red2[lid] = acc2;
  workgroupBarrier();
  for (var s = {LANES // 2}u; s > 0u; s = s >> 1u) {{
    if (lane < s) {{
      red[lid] = red[lid] + red[lid + s];
      red2[lid] = red2[lid] + red2[lid + s];
    }}
    workgroupBarrier();
  }}
  if (lane == 0u && n < P[1]) {{
      var v = red[lid];
      {epi}
      st_Y(P[3] + n, {ydt.convert("v", "f32")});
  }}
}}
"""
    return src, nb


def _fast(x: torch.Tensor, *weights: torch.Tensor) -> bool:
    """One contiguous row of x, and k-contiguous weights that 16-byte loads can read."""
    k = x.shape[-1]
    if x.numel() != k or not x.is_contiguous() or k > MAX_K:
        return False
    for w in weights:
        u = _unit(dtype_of(w.dtype))
        if w.stride(1) != 1 or k % u or w.stride(0) % u or w.storage_offset() % u or w.dtype != weights[0].dtype:
            return False
    return True


def _matvec(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, gate: torch.Tensor | None,
            bias: torch.Tensor | None, residual: torch.Tensor | None) -> torch.Tensor:
    k, n = x.shape[-1], w.shape[0]
    xdt, wdt, ydt = dtype_of(x.dtype), dtype_of(w.dtype), dtype_of(y.dtype)
    bdt = dtype_of(bias.dtype) if bias is not None else None
    rdt = dtype_of(residual.dtype) if residual is not None else None
    u = _unit(wdt)
    key = ("matvec", xdt.name, wdt.name, ydt.name, bdt and bdt.name, rdt and rdt.name, gate is not None)
    stream = ctx().stream
    kernel = stream.kernel(key, lambda: ("matvec", *_wgsl(xdt, wdt, ydt, bdt, rdt, gate is not None)))
    # for a gated layer, W is the up projection and G the gate
    up = w
    words = [k, n, x.storage_offset(), y.storage_offset(), up.storage_offset() // u, up.stride(0) // u,
             gate.storage_offset() // u if gate is not None else 0, gate.stride(0) // u if gate is not None else 0,
             bias.storage_offset() if bias is not None else 0, residual.storage_offset() if residual is not None else 0]
    binds = [binding(y), binding(x), binding(up)]
    binds += [binding(t) for t in (gate, bias, residual) if t is not None]
    stream.launch(kernel, binds, struct.pack(f"<{len(words)}I", *words), grid_rows(-(-n // COLS)))
    return y


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def linear(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None,
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ w.T (+ bias) (+ residual); y has x's leading shape and w.shape[0] columns."""
    res_ok = residual is None or (residual.is_contiguous() and residual.shape == y.shape)
    bias_ok = bias is None or (bias.dim() == 1 and bias.stride(0) == 1)
    if _fast(x, w) and res_ok and bias_ok and y.is_contiguous():
        return _matvec(y, x, w, None, bias, residual)
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


def gated_linear(y: torch.Tensor, x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor) -> torch.Tensor:
    """y = silu(x @ w_gate.T) * (x @ w_up.T)."""
    if _fast(x, w_up, w_gate) and y.is_contiguous():
        return _matvec(y, x, w_up, w_gate, None, None)
    g = empty(y.shape, y.dtype)
    linear(g, x, w_gate)
    linear(y, x, w_up)
    ew.run(_SILU_MUL, y, [g, y])
    return y
