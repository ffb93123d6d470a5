"""How each torch dtype lies in a GPU buffer and how WGSL reads and writes one element.

Every buffer holds exactly the bytes the tensor would hold on the CPU (so copies between the
CPU and the GPU are plain byte copies, and dtype views stay valid), and kernels declare every
buffer as `array<u32>`. 16-bit and 8-bit elements are unpacked from their word, so nothing
needs the `shader-f16` feature. Arithmetic runs in f32 for floating types and in i32 for
integer types (int64 is read from its low word and written sign-extended: values past 2**31
are out of scope, as they are for indices and positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DType:
    torch: torch.dtype
    name: str
    size: int  # bytes per element
    kind: str  # compute type: "f32" or "i32"

    @property
    def per_word(self) -> int:
        """Elements that share one 32-bit word (1 for 32- and 64-bit types)."""
        return max(1, 4 // self.size)

    @property
    def words(self) -> int:
        """Words per element (2 for 64-bit types)."""
        return max(1, self.size // 4)

    def load(self, word: str, e: str) -> str:
        """WGSL expression of element `e` (u32 index) as `self.kind`; `word(i)` reads word i."""
        w = word
        if self.name == "f32":
            return f"bitcast<f32>({w(e)})"
        if self.name == "f16":
            return f"unpack2x16float({w(f'({e}) >> 1u')})[({e}) & 1u]"
        if self.name == "bf16":
            return f"bitcast<f32>(({w(f'({e}) >> 1u')} << (16u - 16u * (({e}) & 1u))) & 0xffff0000u)"
        if self.name in ("i32", "u32"):
            return f"bitcast<i32>({w(e)})"
        if self.name == "i64":
            return f"bitcast<i32>({w(f'2u * ({e})')})"
        if self.name in ("u8", "b8"):
            return f"i32(({w(f'({e}) >> 2u')} >> (8u * (({e}) & 3u))) & 255u)"
        if self.name == "i8":
            return f"(bitcast<i32>({w(f'({e}) >> 2u')} << (24u - 8u * (({e}) & 3u))) >> 24u)"
        if self.name == "i16":
            return f"(bitcast<i32>({w(f'({e}) >> 1u')} << (16u - 16u * (({e}) & 1u))) >> 16u)"
        raise TypeError(f"no GPU load for {self.name}")

    def bits(self, v: str) -> str:
        """WGSL u32 holding the element's bits (low bits) for a value `v` of `self.kind`."""
        if self.name == "f32":
            return f"bitcast<u32>({v})"
        if self.name == "f16":
            return f"(pack2x16float(vec2<f32>({v}, 0.0)) & 0xffffu)"
        if self.name == "bf16":
            return f"bf16_bits({v})"
        if self.name in ("i32", "u32", "i64"):
            return f"bitcast<u32>({v})"
        if self.name == "b8":
            return f"select(0u, 1u, ({v}) != 0i)"
        if self.name in ("u8", "i8"):
            return f"(bitcast<u32>({v}) & 255u)"
        if self.name == "i16":
            return f"(bitcast<u32>({v}) & 0xffffu)"
        raise TypeError(f"no GPU store for {self.name}")

    def round(self, v: str) -> str:
        """WGSL f32 `v` rounded to this floating type's precision (what storing it would do)."""
        if self.name == "f16":
            return f"unpack2x16float(pack2x16float(vec2<f32>({v}, 0.0))).x"
        if self.name == "bf16":
            return f"bitcast<f32>(bf16_bits({v}) << 16u)"
        return v

    def convert(self, v: str, src_kind: str) -> str:
        """Convert a compute value of `src_kind` to `self.kind` (bool: nonzero test)."""
        if self.name == "b8":
            return f"select(0i, 1i, ({v}) != {'0.0' if src_kind == 'f32' else '0i'})"
        if src_kind == self.kind:
            return v
        return f"{self.kind}({v})"


_ALL = [
    DType(torch.float32, "f32", 4, "f32"),
    DType(torch.float16, "f16", 2, "f32"),
    DType(torch.bfloat16, "bf16", 2, "f32"),
    DType(torch.int64, "i64", 8, "i32"),
    DType(torch.int32, "i32", 4, "i32"),
    DType(torch.int16, "i16", 2, "i32"),
    DType(torch.uint8, "u8", 1, "i32"),
    DType(torch.int8, "i8", 1, "i32"),
    DType(torch.bool, "b8", 1, "i32"),
]
DTYPES: dict[torch.dtype, DType] = {d.torch: d for d in _ALL}


def dtype_of(t: torch.dtype) -> DType:
    d = DTYPES.get(t)
    if d is None:
        raise NotImplementedError(f"dtype {t} is not supported on the webgpu device")
    return d


def supported(t: torch.dtype) -> bool:
    return t in DTYPES


# WGSL helpers the load/store expressions above rely on. inf() and nan() read a private
# variable: WGSL rejects constant expressions whose value is not finite.
WGSL_DTYPE_HELPERS = """
var<private> inf_bits: u32 = 0x7f800000u;
fn inf() -> f32 { return bitcast<f32>(inf_bits); }
fn nan() -> f32 { return bitcast<f32>(inf_bits | 0x400000u); }
fn bf16_bits(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return (b >> 16u) | 0x40u; }  // NaN stays NaN
  return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;  // round to nearest even
}
"""
