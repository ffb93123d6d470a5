"""Map kernels: every element of an output is computed independently from its coordinates.

Pointwise ops, gathers, index_select, arange, tril are all map kernels: they differ only in
the WGSL that computes element i (given its coordinates c0..cR-1 in the output), which
this module wraps with the parts they share: output coordinates, per-dtype loads, and the
store strategy.

Outputs are written by whole 32-bit words: a thread owns one word of a contiguous output
(two f16 values, four bools), so no two threads write the same word. Strided outputs of 8/16
bit types are written with atomic and/or on their word instead.

Parameter block: [n, out offset, shape[R], out strides[R], kernel-specific words...].
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.program import Kernel
from .common import Signature
from .dtypes import WGSL_DTYPE_HELPERS, DType, dtype, word_reader
from .strided import MAIN_ARGS, THREAD_ID, WG, words
from .wgsl_math import helpers_for


@dataclass(frozen=True)
class MapInput:
    dtype: str
    alias: bool  # reads the output's own buffer (not bound again)
    kind: str  # compute type it is loaded as: f32 | i32


@dataclass(frozen=True)
class MapSpec:
    name: str
    out: str  # dtype of the output
    dense: bool  # a contiguous output, written a whole word per thread
    rank: int
    inputs: tuple[MapInput, ...]
    body: str  # see map_kernel

    @property
    def atomic(self) -> bool:
        return not self.dense and dtype(self.out).size < 4


def extra_base(rank: int) -> int:
    """Index in the parameter block of the first kernel-specific word."""
    return 2 + 2 * rank


def _store_main(out: DType, dense: bool) -> str:
    tid = THREAD_ID.format(wg=WG)
    if out.size == 8:
        return (f"  let t = {tid};\n  if (t >= P[0]) {{ return; }}\n  let r = value(t);\n"
                "  Y[2u * r.at] = bitcast<u32>(r.v);\n  Y[2u * r.at + 1u] = select(0u, 0xffffffffu, r.v < 0i);")
    if out.size == 4:
        return f"  let t = {tid};\n  if (t >= P[0]) {{ return; }}\n  let r = value(t);\n  Y[r.at] = {out.bits('r.v')};"
    vec, width = out.per_word, 8 * out.size
    mask = (1 << width) - 1
    if not dense:
        return f"""  let t = {tid};
  if (t >= P[0]) {{ return; }}
  let r = value(t);
  let sh = {width}u * (r.at % {vec}u);
  atomicAnd(&Y[r.at / {vec}u], ~({mask}u << sh));
  atomicOr(&Y[r.at / {vec}u], {out.bits('r.v')} << sh);"""
    return f"""  let n = P[0];
  let oo = P[1];
  let w = oo / {vec}u + {tid};
  if (w * {vec}u >= oo + n) {{ return; }}
  var word = 0u;
  if (w * {vec}u < oo || w * {vec}u + {vec}u > oo + n) {{ word = Y[w]; }}
  for (var j = 0u; j < {vec}u; j++) {{
    let s = w * {vec}u + j;
    if (s >= oo && s < oo + n) {{
      let r = value(s - oo);
      word = (word & ~({mask}u << ({width}u * j))) | ({out.bits('r.v')} << ({width}u * j));
    }}
  }}
  Y[w] = word;"""


def map_kernel(spec: MapSpec) -> Kernel:
    """A map kernel; grid: grid_1d of one thread per element (per word of a dense output of
    8/16-bit elements).

    `spec.inputs`: per input its dtype, whether it reads the output's buffer, and the kind to
    load it as; `ld{k}(e)` loads element e of input k. `spec.body` computes the element: it may
    use `i` (linear index), the coordinates `c0..c{rank-1}`, `oy` (element index in the
    output), `P` and `EXTRA` (first kernel-specific parameter word), and ends with
    `return Out(oy, <value of out.kind>);`.
    """
    out, rank, body = dtype(spec.out), spec.rank, spec.body
    atomic = spec.atomic
    sig = words(Signature(), "Y", write=True, atomic=atomic)
    loads = []
    for k, inp in enumerate(spec.inputs):
        dt = dtype(inp.dtype)
        if inp.alias:
            word = word_reader("Y", atomic)
        else:
            words(sig, f"X{k}")
            word = word_reader(f"X{k}")
        v = dt.load(word, "e")
        if dt.kind != inp.kind:
            v = f"{inp.kind}({v})"
        loads.append(f"fn ld{k}(e: u32) -> {inp.kind} {{ return {v}; }}")
    words(sig, "P")
    coords = ["  var rem = i;", "  var oy = P[1];"]
    for d in range(rank - 1, -1, -1):
        if d:
            coords.append(f"  let c{d} = rem % P[{2 + d}]; rem = rem / P[{2 + d}];")
        else:
            coords.append("  let c0 = rem;")
        coords.append(f"  oy += c{d} * P[{2 + rank + d}];")
    fn = (f"const EXTRA: u32 = {extra_base(rank)}u;\nstruct Out {{ at: u32, v: {out.kind} }}\n"
          "fn value(i: u32) -> Out {\n" + "\n".join(coords) + "\n" + body + "\n}\n")
    src = WGSL_DTYPE_HELPERS + helpers_for(body) + "\n".join(loads) + "\n" + fn
    src += f"@compute @workgroup_size({WG})\nfn main({MAIN_ARGS}) {{\n{_store_main(out, spec.dense)}\n}}\n"
    return sig.kernel(spec.name, src)
