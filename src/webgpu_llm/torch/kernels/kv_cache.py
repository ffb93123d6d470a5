"""Appending to a static KV cache in one launch: RoPE on the new keys, then both writes.

For new keys/values of shape [B, Hk, L, D], row i goes to cache position index[i] (or
start + i, where `start` is the cache's length counter, so the positions need no kernel of
their own). Keys are rotated on the way when cos/sin are given.
"""

from __future__ import annotations

import struct

import torch

from ..context import ctx
from ..dtypes import WGSL_DTYPE_HELPERS, dtype_of
from .common import MAIN_ARGS, THREAD_ID, WG, binding, element_store, grid_1d, loader, storage_decl

# P: 0 B, 1 Hk, 2 L, 3 D, 4 index offset, 5 index stride, then geometries (offset + 4 strides):
# 6 k, 11 v, 16 key cache, 21 value cache, 26 cos, 31 sin
_K, _V, _KC, _VC, _COS, _SIN = 6, 11, 16, 21, 26, 31


def _at(base: int, i: str = "i") -> str:
    return f"P[{base}u] + b * P[{base + 1}u] + h * P[{base + 2}u] + {i} * P[{base + 3}u] + d * P[{base + 4}u]"


def _wgsl(kdt: torch.dtype, vdt: torch.dtype, cdt: torch.dtype, idt: torch.dtype, rope_dt: torch.dtype | None,
          start: bool) -> tuple[str, int]:
    c = dtype_of(cdt)
    ka, kstore = element_store(c, "KC")
    va, vstore = element_store(c, "VC")
    decls = [storage_decl(0, "KC", True, ka), storage_decl(1, "VC", True, va), storage_decl(2, "K"),
             storage_decl(3, "V"), storage_decl(4, "I")]
    loads = loader(dtype_of(kdt), "K", "f32") + loader(dtype_of(vdt), "V", "f32") + loader(dtype_of(idt), "I", "i32")
    nb = 5
    key = f"ld_K({_at(_K)})"
    if rope_dt is not None:
        decls += [storage_decl(5, "COS"), storage_decl(6, "SIN")]
        loads += loader(dtype_of(rope_dt), "COS", "f32") + loader(dtype_of(rope_dt), "SIN", "f32")
        nb = 7
        key = (f"ld_K({_at(_K)}) * ld_COS({_at(_COS)}) + "
               f"select(xp, -xp, d < half) * ld_SIN({_at(_SIN)})")
    decls.append(storage_decl(nb, "P"))
    pos = "u32(ld_I(P[4]) + i32(i))" if start else "u32(ld_I(P[4] + i * P[5]))"
    partner = ""
    if rope_dt is not None:
        partner = (f"  let half = D / 2u;\n  let pd = select(d - half, d + half, d < half);\n"
                   f"  let xp = ld_K(P[{_K}u] + b * P[{_K + 1}u] + h * P[{_K + 2}u] + i * P[{_K + 3}u] + pd * P[{_K + 4}u]);\n")
    src = "\n".join(decls) + "\n" + WGSL_DTYPE_HELPERS + loads + kstore + vstore + f"""
@compute @workgroup_size({WG})
fn main({MAIN_ARGS}) {{
  let t = {THREAD_ID.format(wg=WG)};
  let D = P[3];
  let L = P[2];
  let Hk = P[1];
  if (t >= P[0] * Hk * L * D) {{ return; }}
  let d = t % D;
  let i = (t / D) % L;
  let h = (t / (D * L)) % Hk;
  let b = t / (D * L * Hk);
  let p = {pos};
{partner}  st_KC({_at(_KC, "p")}, {c.convert(key, "f32")});
  st_VC({_at(_VC, "p")}, {c.convert(f"ld_V({_at(_V)})", "f32")});
}}
"""
    return src, nb


def _geom(t: torch.Tensor | None) -> list[int]:
    if t is None:
        return [0] * 5
    return [t.storage_offset(), *[0 if t.shape[d] == 1 else t.stride(d) for d in range(4)]]


def kv_append(kc: torch.Tensor, vc: torch.Tensor, k: torch.Tensor, v: torch.Tensor, index: torch.Tensor,
              start: bool, cos: torch.Tensor | None = None, sin: torch.Tensor | None = None) -> None:
    """kc[:, :, p_i] = rope(k)[:, :, i]; vc[:, :, p_i] = v[:, :, i] with p_i = index[i] (or index + i)."""
    b, hk, n, d = k.shape
    if k.numel() == 0:
        return
    rope_dt = cos.dtype if cos is not None else None
    key = ("kv_append", k.dtype, v.dtype, kc.dtype, index.dtype, rope_dt, start)
    stream = ctx().stream
    kernel = stream.kernel(key, lambda: ("kv_append", *_wgsl(k.dtype, v.dtype, kc.dtype, index.dtype, rope_dt, start)))
    cos4 = cos.expand(b, 1, n, d) if cos is not None else None
    sin4 = sin.expand(b, 1, n, d) if sin is not None else None
    words = [b, hk, n, d, index.storage_offset(), index.stride(0) if index.dim() else 0,
             *_geom(k), *_geom(v), *_geom(kc), *_geom(vc), *_geom(cos4), *_geom(sin4)]
    binds = [binding(kc), binding(vc), binding(k), binding(v), binding(index)]
    if cos is not None and sin is not None:
        binds += [binding(cos), binding(sin)]
    stream.launch(kernel, binds, struct.pack(f"<{len(words)}I", *words), grid_1d(k.numel()))
