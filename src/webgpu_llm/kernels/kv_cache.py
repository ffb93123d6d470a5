"""Appending to a static KV cache in one launch: RoPE on the new keys, then both writes.

For new keys/values of shape [B, Hk, L, D], row i goes to cache position index[i] (or
start + i, where `start` is the cache's length counter, so the positions need no kernel of
their own). Keys are rotated on the way when cos/sin are given.

Parameters: 0 B, 1 Hk, 2 L, 3 D, 4 index offset, 5 index stride, then geometries (offset + 4
strides): 6 k, 11 v, 16 key cache, 21 value cache, 26 cos, 31 sin.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.program import Kernel
from .common import Signature
from .dtypes import WGSL_DTYPE_HELPERS, dtype, element_store, loader
from .strided import MAIN_ARGS, THREAD_ID, WG, words

_K, _V, _KC, _VC, _COS, _SIN = 6, 11, 16, 21, 26, 31


@dataclass(frozen=True)
class KvAppendSpec:
    k: str
    v: str
    cache: str  # of both caches
    index: str
    rope: str | None  # dtype of cos/sin, None: keys are not rotated
    start: bool  # index is the first position (the cache's length), not one per row


def _at(base: int, i: str = "i") -> str:
    return f"P[{base}u] + b * P[{base + 1}u] + h * P[{base + 2}u] + {i} * P[{base + 3}u] + d * P[{base + 4}u]"


def kv_append_kernel(s: KvAppendSpec) -> Kernel:
    """grid: grid_1d(elements of k)."""
    c = dtype(s.cache)
    ka, kstore = element_store(c, "KC")
    va, vstore = element_store(c, "VC")
    sig = Signature()
    for name, write, atomic in (("KC", True, ka), ("VC", True, va), ("K", False, False), ("V", False, False),
                                ("I", False, False)):
        words(sig, name, write, atomic)
    loads = loader(dtype(s.k), "K", "f32") + loader(dtype(s.v), "V", "f32") + loader(dtype(s.index), "I", "i32")
    key = f"ld_K({_at(_K)})"
    if s.rope is not None:
        words(words(sig, "COS"), "SIN")
        loads += loader(dtype(s.rope), "COS", "f32") + loader(dtype(s.rope), "SIN", "f32")
        key = (f"ld_K({_at(_K)}) * ld_COS({_at(_COS)}) + "
               f"select(xp, -xp, d < half) * ld_SIN({_at(_SIN)})")
    words(sig, "P")
    pos = "u32(ld_I(P[4]) + i32(i))" if s.start else "u32(ld_I(P[4] + i * P[5]))"
    partner = ""
    if s.rope is not None:
        partner = (f"  let half = D / 2u;\n  let pd = select(d - half, d + half, d < half);\n"
                   f"  let xp = ld_K(P[{_K}u] + b * P[{_K + 1}u] + h * P[{_K + 2}u] + i * P[{_K + 3}u] + pd * P[{_K + 4}u]);\n")
    return sig.kernel("kv_append", WGSL_DTYPE_HELPERS + loads + kstore + vstore + f"""
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
""")
