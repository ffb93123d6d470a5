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

import struct
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..context import ctx
from ..dtypes import WGSL_DTYPE_HELPERS, DType, dtype_of
from ..tensors import block
from .common import MAIN_ARGS, THREAD_ID, WG, binding, grid_1d, storage_decl, word_reader
from .wgsl_math import helpers_for


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


def map_wgsl(out: DType, dense: bool, rank: int, inputs: Sequence[tuple[DType, bool, str]],
             body: str) -> tuple[str, int]:
    """WGSL of a map kernel, and its number of storage bindings.

    `inputs`: (dtype, reads the output's buffer, kind to load as) per input; `ld{k}(e)` loads
    element e of input k. `body` computes the element: it may use `i` (linear index), the
    coordinates `c0..c{rank-1}`, `oy` (element index in the output), `P` and `EXTRA` (first
    kernel-specific parameter word), and ends with `return Out(oy, <value of out.kind>);`.
    """
    atomic = not dense and out.size < 4
    decls = [storage_decl(0, "Y", write=True, atomic=atomic)]
    nb = 1
    loads = []
    for k, (dt, alias, kind) in enumerate(inputs):
        if alias:
            word = word_reader("Y", atomic)
        else:
            decls.append(storage_decl(nb, f"X{k}"))
            nb += 1
            word = word_reader(f"X{k}")
        v = dt.load(word, "e")
        if dt.kind != kind:
            v = f"{kind}({v})"
        loads.append(f"fn ld{k}(e: u32) -> {kind} {{ return {v}; }}")
    decls.append(storage_decl(nb, "P"))
    coords = ["  var rem = i;", "  var oy = P[1];"]
    for d in range(rank - 1, -1, -1):
        if d:
            coords.append(f"  let c{d} = rem % P[{2 + d}]; rem = rem / P[{2 + d}];")
        else:
            coords.append("  let c0 = rem;")
        coords.append(f"  oy += c{d} * P[{2 + rank + d}];")
    fn = (f"const EXTRA: u32 = {extra_base(rank)}u;\nstruct Out {{ at: u32, v: {out.kind} }}\n"
          "fn value(i: u32) -> Out {\n" + "\n".join(coords) + "\n" + body + "\n}\n")
    src = "\n".join(decls) + "\n" + WGSL_DTYPE_HELPERS + helpers_for(body) + "\n".join(loads) + "\n" + fn
    src += f"@compute @workgroup_size({WG})\nfn main({MAIN_ARGS}) {{\n{_store_main(out, dense)}\n}}\n"
    return src, nb


def launch(key: Any, name: str, out: torch.Tensor, shape: Sequence[int], out_strides: Sequence[int],
           inputs: Sequence[torch.Tensor], kinds: Sequence[str], body: Callable[[int], str],
           extra: bytes, scatter: bool = False) -> None:
    """Run a map kernel over the index space `shape` (collapsed), writing into `out`.

    `out_strides` give each element's place in `out` (its own strides, for plain maps).
    `body(rank)` returns the WGSL body (see map_wgsl); `extra` the kernel-specific parameter
    bytes; `key` identifies the body (the kernel cache adds dtypes, rank and aliasing).
    `scatter`: the body computes where each element goes, so `out` is written element-wise.
    """
    n = 1
    for s in shape:
        n *= s
    if n == 0:
        return
    rank = len(shape)
    dense = not scatter and out.is_contiguous()
    out_dt = dtype_of(out.dtype)
    yb = block(out)
    specs = tuple((dtype_of(t.dtype), block(t) is yb, k) for t, k in zip(inputs, kinds))
    full_key = (key, specs, out_dt.name, rank, dense)
    stream = ctx().stream
    kernel = stream.kernel(full_key, lambda: (name, *map_wgsl(out_dt, dense, rank, specs, body(rank))))
    head = struct.pack(f"<{2 + 2 * rank}I", n, out.storage_offset(), *shape, *out_strides)
    binds = [binding(out)] + [binding(t) for t, s in zip(inputs, specs) if not s[1]]
    if dense and out_dt.size < 4:
        off, vec = out.storage_offset(), out_dt.per_word
        threads = (off + n - 1) // vec - off // vec + 1
    else:
        threads = n
    stream.launch(kernel, binds, head + extra, grid_1d(threads))
