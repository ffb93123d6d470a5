"""Element types by name ("f32", "f16", "bf16", "i64", "i32", "i16", "u8", "i8", "b8"): how an
element lies in a buffer and how WGSL reads and writes one.

A buffer holds exactly the bytes the tensor would hold on the CPU (so copies between the CPU
and the GPU are plain byte copies, and dtype views stay valid), and kernels declare every such
buffer as `array<u32>`. 16-bit and 8-bit elements are unpacked from their word, so nothing
needs the `shader-f16` feature. Arithmetic runs in f32 for floating types and in i32 for
integer types (int64 is read from its low word and written sign-extended: values past 2**31
are out of scope, as they are for indices and positions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class DType:
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

    def load(self, word: Callable[[str], str], e: str) -> str:
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


DTYPES: dict[str, DType] = {d.name: d for d in (
    DType("f32", 4, "f32"),
    DType("f16", 2, "f32"),
    DType("bf16", 2, "f32"),
    DType("i64", 8, "i32"),
    DType("i32", 4, "i32"),
    DType("i16", 2, "i32"),
    DType("u8", 1, "i32"),
    DType("i8", 1, "i32"),
    DType("b8", 1, "i32"),
)}


def dtype(name: str) -> DType:
    return DTYPES[name]


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


def word_reader(name: str, atomic: bool = False) -> Callable[[str], str]:
    if atomic:
        return lambda i: f"atomicLoad(&{name}[{i}])"
    return lambda i: f"{name}[{i}]"


def loader(dt: DType, buf: str, kind: str | None = None, fn: str | None = None) -> str:
    """WGSL `fn ld_{buf}(e: u32) -> kind` reading element e of binding `buf`."""
    kind = kind or dt.kind
    v = dt.load(word_reader(buf), "e")
    if dt.kind != kind:
        v = f"{kind}({v})"
    return f"fn {fn or 'ld_' + buf}(e: u32) -> {kind} {{ return {v}; }}\n"


def element_store(dt: DType, buf: str = "Y") -> tuple[bool, str]:
    """(needs an atomic binding, WGSL `fn st_{buf}(e: u32, v: kind)`) storing element e.

    For kernels where several threads may write elements of one word; 8/16-bit elements
    are merged into their word with atomic and/or.
    """
    head = f"fn st_{buf}(e: u32, v: {dt.kind}) {{\n"
    if dt.size == 4:
        return False, head + f"  {buf}[e] = {dt.bits('v')};\n}}\n"
    if dt.size == 8:
        return False, head + (f"  {buf}[2u * e] = bitcast<u32>(v);\n"
                              f"  {buf}[2u * e + 1u] = select(0u, 0xffffffffu, v < 0i);\n}}\n")
    vec, width = dt.per_word, 8 * dt.size
    mask = (1 << width) - 1
    return True, head + (f"  let sh = {width}u * (e % {vec}u);\n"
                         f"  atomicAnd(&{buf}[e / {vec}u], ~({mask}u << sh));\n"
                         f"  atomicOr(&{buf}[e / {vec}u], {dt.bits('v')} << sh);\n}}\n")


def bf16_pair(w: str) -> str:
    """WGSL: the two bf16 values of the 32-bit word `w` as f32s, low half first (comma-separated)."""
    return f"bitcast<f32>({w} << 16u), bitcast<f32>({w} & 0xffff0000u)"


def vec4_elems(dt: DType) -> int:
    """Elements of a float type in one 16-byte load."""
    return 16 // dt.size


def vec4_decoder(dt: DType, fn: str = "wdec") -> str:
    """WGSL `fn fn(v: vec4<u32>) -> array<f32, n>`: 16 bytes of a float type as f32."""
    n = vec4_elems(dt)
    if dt.name == "f32":
        vals = ", ".join(f"bitcast<f32>(v.{c})" for c in "xyzw")
    elif dt.name == "f16":
        vals = ", ".join(f"unpack2x16float(v.{c}).{h}" for c in "xyzw" for h in "xy")
    elif dt.name == "bf16":
        vals = ", ".join(bf16_pair(f"v.{c}") for c in "xyzw")
    else:
        raise TypeError(f"no 16-byte reader for {dt.name}")
    return f"fn {fn}(v: vec4<u32>) -> array<f32, {n}> {{\n  return array<f32, {n}>({vals});\n}}\n"


def vec4_reader(dt: DType, fn: str = "wunit", buf: str = "W4") -> str:
    """WGSL `fn fn(i) -> array<f32, n>`: the 16 bytes at vec4 index i of binding `buf` as f32."""
    return (vec4_decoder(dt, f"{fn}_dec")
            + f"fn {fn}(i: u32) -> array<f32, {vec4_elems(dt)}> {{ return {fn}_dec({buf}[i]); }}\n")
