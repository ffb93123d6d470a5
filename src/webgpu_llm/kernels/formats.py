"""Weight formats: how each GGUF/safetensors type lies in GPU memory and how WGSL reads it.

A weight matrix has `rows` output rows of `k` inputs. Every format is read in *units* of 32
consecutive inputs of one row (a Q4_0/Q8_0 block, a K-quant sub-block, 32 floats), by a WGSL
function `fn NAME(r: u32, u: u32) -> array<vec4<f32>, 8>` that returns the unit dequantized.
The matrix kernels are written once against that function.

On the GPU the quantized bits are kept as they are, only regrouped so that WGSL, which reads
aligned 32-bit words, can load them with 16-byte vector loads: the 2-byte block headers of
Q8_0/Q4_x/Q5_x/Q6_K/IQ4_NL, Q2_K's (d, dmin) and IQ4_XS's 8-byte header (d, scales_h,
scales_l) move to a section of their own after the quants ("structure of arrays"). Q4_K and
Q5_K blocks are already 4-byte aligned and stay as they are; Q3_K's 110-byte blocks are padded
to 112 (d in the last word, beside the scales). Float rows are padded with zeros to a multiple
of 32.

IQ4_NL and IQ4_XS store 4-bit indices into a fixed table of 16 int8 values (`IQ4_VALUES`); the
loaders compute the table with a polynomial instead of looking it up (`_IQ4_HELPERS`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .dtypes import bf16_pair

UNIT = 32  # inputs per unit
# Float formats: 16-byte words per unit. A mat-vec may take a unit's words from anywhere in the
# row (`Format.wgsl_unit(spread=True)`).
SPREAD_FORMATS = {"f32": 8, "f16": 4, "bf16": 4}
QK_K = 256


def _words(a: np.ndarray) -> np.ndarray:
    """Bytes (any shape) to a flat u32 array padded to a whole number of vec4s."""
    b = np.ascontiguousarray(a).view(np.uint8).reshape(-1)
    pad = (-len(b)) % 16
    if pad:
        b = np.concatenate([b, np.zeros(pad, np.uint8)])
    return b.view(np.uint32)


@dataclass(frozen=True)
class Format:
    name: str
    block: int  # inputs per block in the file
    block_bytes: int  # bytes per block in the file (floats: bytes per value)
    quantized: bool

    # -- sizes ---------------------------------------------------------------------------
    def padded_k(self, k: int) -> int:
        return k if self.quantized else -(-k // UNIT) * UNIT

    def units(self, k: int) -> int:
        return self.padded_k(k) // UNIT

    def row_bytes(self, k: int) -> int:
        """Bytes of one row in the file."""
        return k // self.block * self.block_bytes

    def check_k(self, k: int, what: str = "weight") -> str | None:
        if self.quantized and k % self.block:
            return f"{what}: {self.name} needs rows of a multiple of {self.block} values, got {k}"
        if k % 4:
            return f"{what}: rows of {k} values are not supported (need a multiple of 4)"
        return None

    # -- packing -------------------------------------------------------------------------
    def pack(self, data: np.ndarray, k: int) -> np.ndarray:
        """File data of whole rows -> the u32 words of the GPU layout.

        `data` is (rows, k) floats for float formats (bf16 as uint16), or (rows, row_bytes)
        uint8 for quantized ones.
        """
        rows = data.shape[0]
        if not self.quantized:
            kp = self.padded_k(k)
            dt = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16}[self.name]
            out = np.zeros((rows, kp), dt)
            out[:, :k] = data.astype(dt, copy=False) if self.name != "bf16" else data.view(np.uint16)
            return _words(out)
        blocks = np.ascontiguousarray(data, dtype=np.uint8).reshape(rows * (k // self.block), self.block_bytes)
        return _PACKERS[self.name](blocks)

    def nbytes(self, rows: int, k: int) -> int:
        """Bytes of the GPU layout of `rows` rows (for memory planning and splitting)."""
        if not self.quantized:
            return -(-rows * self.padded_k(k) * {"f32": 4, "f16": 2, "bf16": 2}[self.name] // 16) * 16
        nb = rows * (k // self.block)
        return sum(-(-nb * s // 16) * 16 for s in _SECTION_BYTES[self.name])

    # -- WGSL ----------------------------------------------------------------------------
    def wgsl_unit(self, fn: str, buf: str, rows: int, k: int, spread: bool = False, half: bool = False) -> str:
        """WGSL for `fn(r, u) -> array<vec4<f32>, 8>` over binding `buf: array<vec4<u32>>`.

        `spread` (float formats only, see SPREAD_FORMATS): the unit's 16-byte words are the
        ones `upos(u, i)` names, not adjacent ones (the caller defines `upos`).

        `half` (f16 only): the values as `vec4<f16>`s, as stored (the kernel enables f16).

        Float formats read a unit in two steps, also defined: `fn_raw(r, u)` returns its
        words, `fn_dec(words)` their values (a mat-vec may request the words early)."""
        if half and self.name != "f16":
            raise ValueError(f"f16 arithmetic takes f16 weights, not {self.name}")
        if not self.quantized:
            words = SPREAD_FORMATS[self.name]
            pos = "upos(u, $i)" if spread else f"u * {words}u + $i"
            raw = unroll(f"  let base = r * {self.units(k) * words}u;\n%{words}  o[$i] = {buf}[base + {pos}];")
            wt, vt = f"array<vec4<u32>, {words}>", f"array<vec4<{'f16' if half else 'f32'}>, 8>"
            return (f"fn {fn}_raw(r: u32, u: u32) -> {wt} {{\n  var o: {wt};\n{raw}\n  return o;\n}}\n"
                    f"fn {fn}_dec(w: {wt}) -> {vt} {{\n  var o: {vt};\n"
                    f"{unroll(_HALF_DEC if half else _FLOAT_DEC[self.name])}\n  return o;\n}}\n"
                    f"fn {fn}(r: u32, u: u32) -> {vt} {{ return {fn}_dec({fn}_raw(r, u)); }}\n")
        body = unroll(_WGSL[self.name].format(
            B=buf, NU=k // UNIT, NSB=k // QK_K, **self._offsets(rows, k))).replace("FN_", f"{fn}_")
        return (self._helpers(fn)
                + f"fn {fn}(r: u32, u: u32) -> array<vec4<f32>, 8> {{\n  var o: array<vec4<f32>, 8>;\n{body}\n  return o;\n}}\n")

    def split_words(self) -> int:
        """The 16-byte words `wgsl_unit_split`'s raw function returns (0: no split loads)."""
        return SPREAD_FORMATS.get(self.name, 0) if not self.quantized else _SPLIT.get(self.name, (0,))[0]

    def wgsl_unit_split(self, fn: str, buf: str, rows: int, k: int) -> str:
        """WGSL for `fn_raw(r, u) -> array<vec4<u32>, W>` (the unit's words, W = split_words())
        and `fn_dec(w) -> array<vec4<f32>, 8>` (their values): a quantized unit's loads apart
        from its arithmetic (float formats define theirs in `wgsl_unit`)."""
        words = self.split_words()
        if not self.quantized or not words:
            raise ValueError(f"{self.name} has no split loads of its own")
        wt, vt = f"array<vec4<u32>, {words}>", "array<vec4<f32>, 8>"
        _, raw, dec = _SPLIT[self.name]
        raw = unroll(raw.format(B=buf, NU=k // UNIT, **self._offsets(rows, k)))
        return (f"fn {fn}_raw(r: u32, u: u32) -> {wt} {{\n  var o: {wt};\n{raw}\n  return o;\n}}\n"
                f"fn {fn}_dec(w: {wt}) -> {vt} {{\n  var o: {vt};\n{unroll(dec)}\n  return o;\n}}\n")

    def has_i8_split(self) -> bool:
        """Does `wgsl_unit_i8_split` take this format?"""
        return self.name in _SPLIT_I8

    def wgsl_unit_i8_split(self, fn: str, buf: str, rows: int, k: int) -> str:
        """WGSL for `fn_raw(r, u)` (a unit's words, as `wgsl_unit_split`'s) and
        `fn_dotw(w, x0, x1, xd) -> f32` (those words times an int8 activation unit, as
        `wgsl_unit_i8`'s function computes from memory)."""
        if not self.has_i8_split():
            raise ValueError(f"{self.name} has no split int8 loads")
        wt = f"array<vec4<u32>, {self.split_words()}>"
        raw = self.wgsl_unit_split(fn, buf, rows, k)
        raw = raw[:raw.index(f"fn {fn}_dec")]
        return (raw + f"fn {fn}_dotw(w: {wt}, x0: vec4<u32>, x1: vec4<u32>, xd: vec2<f32>) -> f32 {{\n"
                f"{_SPLIT_I8[self.name]}\n}}\n")

    def _helpers(self, fn: str) -> str:
        """WGSL helpers of this format's loader `fn`, named after it (`FN_x` -> `fn_x`): a
        kernel that reads two segments of one format gets two copies, not one defined twice."""
        return _FORMAT_HELPERS.get(self.name, "").replace("FN_", f"{fn}_")

    def _offsets(self, rows: int, k: int) -> dict[str, int]:
        """Word offsets of the second and third sections of a packed quantized matrix."""
        nb = rows * (k // self.block) if self.quantized else 0
        sec = [-(-nb * s // 16) * 4 for s in _SECTION_BYTES.get(self.name, ())]  # words/section
        off = [sum(sec[:i]) for i in range(len(sec))]
        return {"OFF1": off[1] if len(off) > 1 else 0, "OFF2": off[2] if len(off) > 2 else 0}

    def wgsl_unit_i8(self, fn: str, buf: str, rows: int, k: int) -> str:
        """WGSL for `fn(r, u, x0, x1, xd) -> f32`: row r's unit u times an int8 activation unit.

        The activation unit is 32 int8 values packed four to a word (x0: values 0..15, x1:
        16..31) with xd = (scale, scale * sum of the values); the dot product runs on
        `dot4I8Packed`. The formats of INT8_FORMATS have this path: those whose weights are
        integers times a scale per 16 or 32 values (plus a minimum per 16 or 32 values).
        """
        body = self._i8(_I8_QUANTS[self.name] + _I8_TAIL[self.name], buf, rows, k).replace("FN_", f"{fn}_")
        return self._helpers(fn) + f"fn {fn}(r: u32, u: u32, x0: vec4<u32>, x1: vec4<u32>, xd: vec2<f32>) -> f32 {{\n{body}\n}}\n"

    def wgsl_unit_q(self, fn: str, buf: str, rows: int, k: int) -> str:
        """WGSL for `fn(r, u) -> QUnit`: row r's unit u as 32 packed int8s (lo: values 0..15,
        hi: 16..31) and dm = (d, m), the weights being d * q + m (MMA_FORMATS; the caller
        declares `struct QUnit { lo: vec4<u32>, hi: vec4<u32>, dm: vec2<f32> }`)."""
        ret = _I8_FOLD.get(self.name, "\n  return QUnit(lo, hi, {DM});").replace("{DM}", _I8_DM[self.name])
        body = self._i8(_I8_QUANTS[self.name] + ret, buf, rows, k).replace("FN_", f"{fn}_")
        return self._helpers(fn) + f"fn {fn}(r: u32, u: u32) -> QUnit {{\n{body}\n}}\n"

    def _i8(self, code: str, buf: str, rows: int, k: int) -> str:
        return code.format(B=buf, NU=k // UNIT, NSB=k // QK_K, **self._offsets(rows, k))


# --- packers: (n_blocks, block_bytes) uint8 -> u32 words --------------------------------


def _split(blocks: np.ndarray, *cuts: int) -> list[np.ndarray]:
    return np.split(blocks, list(cuts), axis=1)


def _pack_q8_0(b: np.ndarray) -> np.ndarray:
    d, qs = _split(b, 2)
    return np.concatenate([_words(qs), _words(d)])


def _pack_q4_0(b: np.ndarray) -> np.ndarray:
    d, qs = _split(b, 2)
    return np.concatenate([_words(qs), _words(d)])


def _pack_q4_1(b: np.ndarray) -> np.ndarray:
    dm, qs = _split(b, 4)
    return np.concatenate([_words(qs), _words(dm)])


def _pack_q5_0(b: np.ndarray) -> np.ndarray:
    d, qh, qs = _split(b, 2, 6)
    return np.concatenate([_words(qs), _words(qh), _words(d)])


def _pack_q5_1(b: np.ndarray) -> np.ndarray:
    dm, qh, qs = _split(b, 4, 8)
    return np.concatenate([_words(qs), _words(qh), _words(dm)])


def _pack_raw(b: np.ndarray) -> np.ndarray:
    return _words(b)


def _pack_q6_k(b: np.ndarray) -> np.ndarray:
    body, d = _split(b, 208)
    return np.concatenate([_words(body), _words(d)])


def _pack_q2_k(b: np.ndarray) -> np.ndarray:
    # scales (16 bytes) and quants (64) as they are, five 16-byte words a block; (d, dmin) after
    body, dm = _split(b, 80)
    return np.concatenate([_words(body), _words(dm)])


def _pack_q3_k(b: np.ndarray) -> np.ndarray:
    # hmask (32 bytes), quants (64), scales (12), d (2) and two bytes of padding: seven 16-byte
    # words a block, the scales and d in the last
    return _words(np.concatenate([b, np.zeros((len(b), 2), np.uint8)], axis=1))


def _pack_iq4_xs(b: np.ndarray) -> np.ndarray:
    # the quants (eight 16-byte words a block, one a unit), then the 8-byte headers: d and
    # scales_h in one word, scales_l in the next
    head, qs = _split(b, 8)
    return np.concatenate([_words(qs), _words(head)])


def _pack_mxfp4(b: np.ndarray) -> np.ndarray:
    # the 16 bytes of 4-bit codes (a word a unit), then the 1-byte scales, four to a word
    e, qs = _split(b, 1)
    return np.concatenate([_words(qs), _words(e)])


_PACKERS = {
    "q8_0": _pack_q8_0, "q4_0": _pack_q4_0, "q4_1": _pack_q4_1, "q5_0": _pack_q5_0,
    "q5_1": _pack_q5_1, "q4_k": _pack_raw, "q5_k": _pack_raw, "q6_k": _pack_q6_k,
    "q2_k": _pack_q2_k, "q3_k": _pack_q3_k, "iq4_nl": _pack_q4_0, "iq4_xs": _pack_iq4_xs,
    "mxfp4": _pack_mxfp4,
}
# bytes per block of each section, in the order the packers write them
_SECTION_BYTES = {
    "q8_0": (32, 2), "q4_0": (16, 2), "q4_1": (16, 4), "q5_0": (16, 4, 2), "q5_1": (16, 4, 4),
    "q4_k": (144,), "q5_k": (176,), "q6_k": (208, 2),
    "q2_k": (80, 4), "q3_k": (112,), "iq4_nl": (16, 2), "iq4_xs": (128, 8),
    "mxfp4": (16, 1),
}

# --- WGSL bodies -------------------------------------------------------------------------
# Helpers used here are defined once in WGSL_HELPERS. `{B}` is the binding, `g` the block.

WGSL_HELPERS = """
fn wrd_at(v: vec4<u32>, i: u32) -> u32 { return v[i & 3u]; }
fn nib_lo(w: u32) -> vec4<f32> { return vec4<f32>((vec4<u32>(w, w >> 8u, w >> 16u, w >> 24u)) & vec4<u32>(15u)); }
fn nib_hi(w: u32) -> vec4<f32> { return vec4<f32>((vec4<u32>(w >> 4u, w >> 12u, w >> 20u, w >> 28u)) & vec4<u32>(15u)); }
fn bits4(w: u32, s: u32) -> vec4<f32> { return vec4<f32>((vec4<u32>(w >> s, w >> (s + 1u), w >> (s + 2u), w >> (s + 3u))) & vec4<u32>(1u)); }
// bits s..s+3 of w as bit 4 of each byte of a word (the 5th bit of four packed 5-bit values)
fn hi5(w: u32, s: u32) -> u32 { let t = (w >> s) & 15u; return ((t & 1u) << 4u) | ((t & 2u) << 11u) | ((t & 4u) << 18u) | ((t & 8u) << 25u); }
fn i8x4(w: u32) -> vec4<f32> {
  return vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(w << 24u, w << 16u, w << 8u, w)) >> vec4<u32>(24u));
}
fn u8x4(w: u32) -> vec4<f32> { return vec4<f32>((vec4<u32>(w, w >> 8u, w >> 16u, w >> 24u)) & vec4<u32>(255u)); }
"""
WGSL_HELPERS += f"fn bf16x2(w: u32) -> vec2<f32> {{ return vec2<f32>({bf16_pair('w')}); }}\n"

_W = "{B}[({i}) >> 2u][({i}) & 3u]"  # word i of binding B


def _half(off: str) -> str:
    # f16 number g of a section starting at word `off`
    return f"unpack2x16float({_W.format(B='{B}', i=off + ' + (g >> 1u)')})[g & 1u]"


# int8 activations: q8_0 weights are int8 already; q4_0 nibbles (0..15) are non-negative
# int8s whose offset of 8 is taken out with the activation sum: sum((q - 8) x) = q.x - 8 sum(x);
# the 5-bit formats add their high bit as bit 4 of each byte (0..31); a unit's minimum (q4_1,
# q5_1, q4_k, q5_k) multiplies the activation sum the same way: sum((d q + m) x) = d q.x + m sum(x);
# q6_k's two scales per unit take the sums of the unit's halves instead
# q2_k's two (scale, minimum) pairs a unit take the sum of the unit's first half and its whole
# sum (xd.y); q3_k's signed 3-bit values are int8s already (bytes 0xfc..0x03), with two scales
# a unit; iq4_nl/iq4_xs's table values are int8s
INT8_FORMATS = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k", "q2_k", "q3_k", "iq4_nl", "iq4_xs",
                "mxfp4")
_NIBBLES = """  let lo = qb & vec4<u32>(0x0f0f0f0fu);
  let hi = (qb >> vec4<u32>(4u)) & vec4<u32>(0x0f0f0f0fu);"""
_HI5 = """  let lo = (qb & vec4<u32>(0x0f0f0f0fu)) | vec4<u32>(hi5(qh, 0u), hi5(qh, 4u), hi5(qh, 8u), hi5(qh, 12u));
  let hi = ((qb >> vec4<u32>(4u)) & vec4<u32>(0x0f0f0f0fu)) | vec4<u32>(hi5(qh, 16u), hi5(qh, 20u), hi5(qh, 24u), hi5(qh, 28u));"""


def _dot4(w: str, x: str) -> str:
    """WGSL: the dot product of 16 packed int8s (vec4<u32> w) with 16 others (x)."""
    return " + ".join(f"dot4I8Packed({w}.{c}, {x}.{c})" for c in "xyzw")


# the unit's 32 packed int8 weights (lo: values 0..15, hi: 16..31) times the activation unit
_DOT = f"\n  let t = {_dot4('lo', 'x0')}\n        + {_dot4('hi', 'x1')};\n"
# K-quants: unit u is sub-block j = u % 8 of super-block s
_K_HEAD = """  let s = r * {NSB}u + (u >> 3u);
  let j = u & 7u;
"""


def _k_scale_min(words: int) -> str:
    """q4_k/q5_k (super-blocks of `words` 16-byte words): the super-block's (d, dmin) and the
    sub-block's 6-bit (scale, min)."""
    return _K_HEAD + f"""  let h = {{B}}[s * {words}u];
  let dd = unpack2x16float(h.x);
  let sm = q4k_scale_min(h, j);
"""


# q6_k: the super-block's d times the sub-block's two signed 8-bit scales (16 values each)
_Q6K_SCALES = _K_HEAD + """  let hf = j >> 2u;
  let qq = j & 3u;
  let g = s;
  let d = """ + _half("{OFF1}u") + """;
  let scw = {B}[s * 13u + 12u];
  let sb = 8u * hf + 2u * qq;
  let sc0 = d * f32(bitcast<i32>(scw[sb >> 2u] << (24u - 8u * (sb & 3u))) >> 24u);
  let sc1 = d * f32(bitcast<i32>(scw[(sb + 1u) >> 2u] << (24u - 8u * ((sb + 1u) & 3u))) >> 24u);
"""
# q2_k (super-blocks of five 16-byte words: scales, then the 2-bit values): the unit's two
# sub-blocks of 16 values, each d * scale and dmin * min (4 bits each, bytes 2j and 2j + 1)
_Q2K_SCALES = _K_HEAD + """  let dm = unpack2x16float(""" + _W.format(B="{B}", i="{OFF1}u + s") + """);
  let scb = {B}[s * 5u][j >> 1u] >> (16u * (j & 1u));
  let sc0 = i32(scb & 15u);
  let sc1 = i32((scb >> 8u) & 15u);
  let mn0 = i32((scb >> 4u) & 15u);
  let mn1 = i32((scb >> 12u) & 15u);
  let qw = s * 5u + 1u + 2u * (j >> 2u);
"""
# q3_k (super-blocks of seven 16-byte words: hmask, the low 2 bits, then scales and d): the
# unit's two signed 6-bit scales (16 values each) and the block's d
_Q3K_SCALES = _K_HEAD + """  let sv = {B}[s * 7u + 6u];
  let d = unpack2x16float(sv.w).x;
  let sc0 = FN_scale(sv, 2u * j);
  let sc1 = FN_scale(sv, 2u * j + 1u);
  let qw = s * 7u + 2u + 2u * (j >> 2u);
"""
# iq4_xs (a unit's 16 bytes of indices are word g; a block's header two words of section 2):
# d times the unit's signed 6-bit scale (4 low bits in scales_l, 2 high in scales_h)
_IQ4XS_SCALE = """  let g = r * {NU}u + u;
  let s = r * {NSB}u + (u >> 3u);
  let j = u & 7u;
  let hw = """ + _W.format(B="{B}", i="{OFF1}u + 2u * s") + """;
  let lw = """ + _W.format(B="{B}", i="{OFF1}u + 2u * s + 1u") + """;
  let dl = unpack2x16float(hw).x * f32(i32(((lw >> (4u * j)) & 15u) | (((hw >> (16u + 2u * j)) & 3u) << 4u)) - 32);
"""
# mxfp4 (a unit's 16 bytes of codes are word g, its scale byte g of section 2): the e8m0
# scale halved, 2^(e - 128), as ggml_e8m0_to_fp32_half builds it (denormal for e < 2)
_MXFP4_SCALE = """  let g = r * {NU}u + u;
  let e = (""" + _W.format(B="{B}", i="{OFF1}u + (g >> 2u)") + """ >> (8u * (g & 3u))) & 255u;
  let d = bitcast<f32>(select((e - 1u) << 23u, 0x00200000u << e, e < 2u));
"""
# an iq4 unit's 32 table values as int8s from its 16 bytes of indices (low nibbles: 0..15)
_IQ4_INT8 = """  let qb = {B}[g];
  let lo = vec4<u32>(FN_i8(qb.x, 0u), FN_i8(qb.y, 0u), FN_i8(qb.z, 0u), FN_i8(qb.w, 0u));
  let hi = vec4<u32>(FN_i8(qb.x, 4u), FN_i8(qb.y, 4u), FN_i8(qb.z, 4u), FN_i8(qb.w, 4u));"""
# Each int8 unit in parts: `_I8_QUANTS`, WGSL that leaves its 32 weights as packed int8s in
# `lo` (values 0..15) and `hi` (16..31); `_I8_TAIL`, the rest of `Format.wgsl_unit_i8` (the
# dot product with an activation unit and its scaling); `_I8_DM`, the unit's (d, m) with
# weight = d * q + m, for the formats with one scale a unit (the subgroup-matrix matmul,
# kernels/mma.py, multiplies the int8s and scales after)
_I8_QUANTS = {
    "q8_0": """  let g = r * {NU}u + u;
  let lo = {B}[2u * g];
  let hi = {B}[2u * g + 1u];""",
    "q4_0": """  let g = r * {NU}u + u;
  let qb = {B}[g];
""" + _NIBBLES,
    "q4_1": """  let g = r * {NU}u + u;
  let dm = unpack2x16float(""" + _W.format(B="{B}", i="{OFF1}u + g") + """);
  let qb = {B}[g];
""" + _NIBBLES,
    "q5_0": """  let g = r * {NU}u + u;
  let qh = """ + _W.format(B="{B}", i="{OFF1}u + g") + """;
  let qb = {B}[g];
""" + _HI5,
    "q5_1": """  let g = r * {NU}u + u;
  let dm = unpack2x16float(""" + _W.format(B="{B}", i="{OFF2}u + g") + """);
  let qh = """ + _W.format(B="{B}", i="{OFF1}u + g") + """;
  let qb = {B}[g];
""" + _HI5,
    # 4-bit values in the low or high nibbles of the sub-block pair's words
    "q4_k": _k_scale_min(9) + """  let sh = vec4<u32>(4u * (j & 1u));
  let lo = ({B}[s * 9u + 1u + 2u * (j >> 1u)] >> sh) & vec4<u32>(0x0f0f0f0fu);
  let hi = ({B}[s * 9u + 2u + 2u * (j >> 1u)] >> sh) & vec4<u32>(0x0f0f0f0fu);""",
    # q4_k's nibbles plus a 5th bit: bit j of each byte of the high-bit words
    "q5_k": _k_scale_min(11) + """  let sh = vec4<u32>(4u * (j & 1u));
  let shh = vec4<u32>(j);
  let lo = (({B}[s * 11u + 3u + 2u * (j >> 1u)] >> sh) & vec4<u32>(0x0f0f0f0fu)) | ((({B}[s * 11u + 1u] >> shh) & vec4<u32>(0x01010101u)) << vec4<u32>(4u));
  let hi = (({B}[s * 11u + 4u + 2u * (j >> 1u)] >> sh) & vec4<u32>(0x0f0f0f0fu)) | ((({B}[s * 11u + 2u] >> shh) & vec4<u32>(0x01010101u)) << vec4<u32>(4u));""",
    # 6-bit values less 32, with one scale per 16 values
    "q6_k": _Q6K_SCALES + """  let shl = vec4<u32>(4u * (qq >> 1u));
  let shh = vec4<u32>(2u * qq);
  let lo = (({B}[s * 13u + 4u * hf + 2u * (qq & 1u)] >> shl) & vec4<u32>(0x0f0f0f0fu)) | ((({B}[s * 13u + 8u + 2u * hf] >> shh) & vec4<u32>(0x03030303u)) << vec4<u32>(4u));
  let hi = (({B}[s * 13u + 4u * hf + 2u * (qq & 1u) + 1u] >> shl) & vec4<u32>(0x0f0f0f0fu)) | ((({B}[s * 13u + 9u + 2u * hf] >> shh) & vec4<u32>(0x03030303u)) << vec4<u32>(4u));""",
    # 2-bit values (0..3): bits 2 (j % 4) of each byte of the quants of the unit's half
    "q2_k": _Q2K_SCALES + """  let sh = vec4<u32>(2u * (j & 3u));
  let lo = ({B}[qw] >> sh) & vec4<u32>(0x03030303u);
  let hi = ({B}[qw + 1u] >> sh) & vec4<u32>(0x03030303u);""",
    # low 2 bits as q2_k's, less 4 where bit j of the hmask byte is clear: 0xfc | low bits
    "q3_k": _Q3K_SCALES + """  let sh = vec4<u32>(2u * (j & 3u));
  let shh = vec4<u32>(j);
  let lo = (({B}[qw] >> sh) & vec4<u32>(0x03030303u)) | (((~{B}[s * 7u] >> shh) & vec4<u32>(0x01010101u)) * 0xfcu);
  let hi = (({B}[qw + 1u] >> sh) & vec4<u32>(0x03030303u)) | (((~{B}[s * 7u + 1u] >> shh) & vec4<u32>(0x01010101u)) * 0xfcu);""",
    "iq4_nl": """  let g = r * {NU}u + u;
""" + _IQ4_INT8,
    "iq4_xs": _IQ4XS_SCALE + _IQ4_INT8,
    "mxfp4": _MXFP4_SCALE + """  let qb = {B}[g];
  let lo = vec4<u32>(pack4xI8(FN_e2m1(qb.x, 0u)), pack4xI8(FN_e2m1(qb.y, 0u)), pack4xI8(FN_e2m1(qb.z, 0u)), pack4xI8(FN_e2m1(qb.w, 0u)));
  let hi = vec4<u32>(pack4xI8(FN_e2m1(qb.x, 4u)), pack4xI8(FN_e2m1(qb.y, 4u)), pack4xI8(FN_e2m1(qb.z, 4u)), pack4xI8(FN_e2m1(qb.w, 4u)));""",
}
_I8_TAIL = {
    "q8_0": _DOT + """  return """ + _half("{OFF1}u") + """ * xd.x * f32(t);""",
    "q4_0": _DOT + """  return """ + _half("{OFF1}u") + """ * (xd.x * f32(t) - 8.0 * xd.y);""",
    "q4_1": _DOT + """  return dm.x * xd.x * f32(t) + dm.y * xd.y;""",
    "q5_0": _DOT + """  return """ + _half("{OFF2}u") + """ * (xd.x * f32(t) - 16.0 * xd.y);""",
    "q5_1": _DOT + """  return dm.x * xd.x * f32(t) + dm.y * xd.y;""",
    "q4_k": _DOT + """  return dd.x * sm.x * xd.x * f32(t) - dd.y * sm.y * xd.y;""",
    "q5_k": _DOT + """  return dd.x * sm.x * xd.x * f32(t) - dd.y * sm.y * xd.y;""",
    # each half's product and the sum of its activations (a dot product with ones) apart
    "q6_k": """
  let ones = vec4<u32>(0x01010101u);
  let t0 = """ + _dot4("lo", "x0") + " - 32 * (" + _dot4("ones", "x0") + """);
  let t1 = """ + _dot4("hi", "x1") + " - 32 * (" + _dot4("ones", "x1") + """);
  return xd.x * (sc0 * f32(t0) + sc1 * f32(t1));""",
    # the minimums: m0 s0 + m1 s1 = m1 (s0 + s1) + (m0 - m1) s0, the whole sum being xd.y
    "q2_k": """
  let t0 = """ + _dot4("lo", "x0") + """;
  let t1 = """ + _dot4("hi", "x1") + """;
  let s0 = """ + _dot4("vec4<u32>(0x01010101u)", "x0") + """;
  return dm.x * xd.x * f32(sc0 * t0 + sc1 * t1) - dm.y * (f32(mn1) * xd.y + xd.x * f32((mn0 - mn1) * s0));""",
    "q3_k": """
  let t0 = """ + _dot4("lo", "x0") + """;
  let t1 = """ + _dot4("hi", "x1") + """;
  return d * xd.x * f32(sc0 * t0 + sc1 * t1);""",
    "iq4_nl": _DOT + """  return """ + _half("{OFF1}u") + """ * xd.x * f32(t);""",
    "iq4_xs": _DOT + """  return dl * xd.x * f32(t);""",
    "mxfp4": _DOT + """  return d * xd.x * f32(t);""",
}
_I8_DM = {
    "q8_0": "vec2<f32>(" + _half("{OFF1}u") + ", 0.0)",
    "q4_0": "vec2<f32>(1.0, -8.0) * " + _half("{OFF1}u"),
    "q4_1": "dm",
    "q5_0": "vec2<f32>(1.0, -16.0) * " + _half("{OFF2}u"),
    "q5_1": "dm",
    "q4_k": "vec2<f32>(dd.x * sm.x, -dd.y * sm.y)",
    "q5_k": "vec2<f32>(dd.x * sm.x, -dd.y * sm.y)",
    "q3_k": "vec2<f32>(-d, 0.0)",
    "iq4_nl": "vec2<f32>(" + _half("{OFF1}u") + ", 0.0)",
    "iq4_xs": "vec2<f32>(dl, 0.0)",
    "mxfp4": "vec2<f32>(d, 0.0)",
}
# Formats whose unit is written in `_I8_FOLD` instead of QUnit(lo, hi, dm). q3_k has two scales
# a unit but no minimum: each value times its sub-block's scale is an int8 (-sc q with sc in
# -32..31 and q in -4..3 lies in -128..124), with d the unit's scale (-d, as negated)
_I8_FOLD = {
    "q3_k": """
  let lo8 = vec4<u32>(pack4xI8(unpack4xI8(lo.x) * -sc0), pack4xI8(unpack4xI8(lo.y) * -sc0), pack4xI8(unpack4xI8(lo.z) * -sc0), pack4xI8(unpack4xI8(lo.w) * -sc0));
  let hi8 = vec4<u32>(pack4xI8(unpack4xI8(hi.x) * -sc1), pack4xI8(unpack4xI8(hi.y) * -sc1), pack4xI8(unpack4xI8(hi.z) * -sc1), pack4xI8(unpack4xI8(hi.w) * -sc1));
  return QUnit(lo8, hi8, {DM});""",
}
# One scale (and minimum) a unit, or (q3_k) int8s that take the unit's scales in. Not q6_k
# (its 6-bit values times their 8-bit scales reach 4096) nor q2_k (two minimums a unit: the
# matmul has one term m * sum(x) a unit, and the halves' sums of x would change every format's
# kernel)
MMA_FORMATS = tuple(_I8_DM)
# Formats whose (d, m) has m = 0: the matrix-unit matmul leaves out m * sum(x)
NO_MINIMUM = ("q8_0", "q3_k", "iq4_nl", "iq4_xs", "mxfp4")


# Bodies of the unit loaders: `_FLOAT_DEC`, a float unit's values from its 16-byte words `w`
# (f32: 8 words, f16/bf16: 4; `Format.wgsl_unit` reads the words), and `_WGSL`, the quantized
# formats' whole loaders. A line starting with `%N` is unrolled N times in WGSL with `$i`
# replaced by 0..N-1 (each copy in its own block): every array and vector index is then a
# constant, which both shader compilers keep in registers.
_FLOAT_DEC = {
    "f32": "%8  o[$i] = bitcast<vec4<f32>>(w[$i]);",
    "f16": "%4  o[2 * $i] = vec4<f32>(unpack2x16float(w[$i].x), unpack2x16float(w[$i].y)); "
           "o[2 * $i + 1] = vec4<f32>(unpack2x16float(w[$i].z), unpack2x16float(w[$i].w));",
    "bf16": "%4  o[2 * $i] = vec4<f32>(bf16x2(w[$i].x), bf16x2(w[$i].y)); o[2 * $i + 1] = vec4<f32>(bf16x2(w[$i].z), bf16x2(w[$i].w));",
}
# f16 words as f16 values, for kernels that multiply in f16 (no conversion instructions)
_HALF_DEC = "%4  o[2 * $i] = vec4<f16>(bitcast<vec2<f16>>(w[$i].x), bitcast<vec2<f16>>(w[$i].y)); " \
            "o[2 * $i + 1] = vec4<f16>(bitcast<vec2<f16>>(w[$i].z), bitcast<vec2<f16>>(w[$i].w));"

# A unit's loads apart from its arithmetic, for the formats that have them: `fn_raw(r, u)`
# returns its words (the last vec4 holds the scale's word and the block index g, whose parity
# picks the scale's half of it), `fn_dec(words)` its values; a tile matmul requests a unit's
# words steps before it dequantizes them (kernels/mma.py TileShape.depth). (words, raw, dec)
_SPLIT = {
    "q4_0": (2, """  let g = r * {NU}u + u;
  o[0] = {B}[g];
  o[1] = vec4<u32>(""" + _W.format(B="{B}", i="{OFF1}u + (g >> 1u)") + """, g, 0u, 0u);""",
             """  let d = unpack2x16float(w[1].x)[w[1].y & 1u];
%4  o[$i] = d * (nib_lo(w[0][$i]) - 8.0); o[4 + $i] = d * (nib_hi(w[0][$i]) - 8.0);"""),
    "q8_0": (3, """  let g = r * {NU}u + u;
  o[0] = {B}[2u * g];
  o[1] = {B}[2u * g + 1u];
  o[2] = vec4<u32>(""" + _W.format(B="{B}", i="{OFF1}u + (g >> 1u)") + """, g, 0u, 0u);""",
             """  let d = unpack2x16float(w[2].x)[w[2].y & 1u];
%4  o[$i] = d * i8x4(w[0][$i]); o[4 + $i] = d * i8x4(w[1][$i]);"""),
}

# The int8 dot product of a unit from its `_SPLIT` words `w` (Format.wgsl_unit_i8_split): an
# int8 mat-vec may request a unit's words before it has quantized x
_SPLIT_I8 = {
    "q4_0": "  let qb = w[0];\n" + _NIBBLES + _DOT
            + "  return unpack2x16float(w[1].x)[w[1].y & 1u] * (xd.x * f32(t) - 8.0 * xd.y);",
    "q8_0": "  let lo = w[0];\n  let hi = w[1];" + _DOT + "  return unpack2x16float(w[2].x)[w[2].y & 1u] * xd.x * f32(t);",
}


_WGSL = {
    "q8_0": """  let g = r * {NU}u + u;
  let d = """ + _half("{OFF1}u") + """;
  let a = {B}[2u * g];
  let b = {B}[2u * g + 1u];
%4  o[$i] = d * i8x4(a[$i]); o[4 + $i] = d * i8x4(b[$i]);""",
    "q4_0": """  let g = r * {NU}u + u;
  let d = """ + _half("{OFF1}u") + """;
  let qb = {B}[g];
%4  o[$i] = d * (nib_lo(qb[$i]) - 8.0); o[4 + $i] = d * (nib_hi(qb[$i]) - 8.0);""",
    "q4_1": """  let g = r * {NU}u + u;
  let dm = unpack2x16float(""" + _W.format(B="{B}", i="{OFF1}u + g") + """);
  let qb = {B}[g];
%4  o[$i] = dm.x * nib_lo(qb[$i]) + dm.y; o[4 + $i] = dm.x * nib_hi(qb[$i]) + dm.y;""",
    "q5_0": """  let g = r * {NU}u + u;
  let d = """ + _half("{OFF2}u") + """;
  let qh = """ + _W.format(B="{B}", i="{OFF1}u + g") + """;
  let qb = {B}[g];
%4  o[$i] = d * (nib_lo(qb[$i]) + 16.0 * bits4(qh, 4u * $i) - 16.0); o[4 + $i] = d * (nib_hi(qb[$i]) + 16.0 * bits4(qh, 16u + 4u * $i) - 16.0);""",
    "q5_1": """  let g = r * {NU}u + u;
  let dm = unpack2x16float(""" + _W.format(B="{B}", i="{OFF2}u + g") + """);
  let qh = """ + _W.format(B="{B}", i="{OFF1}u + g") + """;
  let qb = {B}[g];
%4  o[$i] = dm.x * (nib_lo(qb[$i]) + 16.0 * bits4(qh, 4u * $i)) + dm.y; o[4 + $i] = dm.x * (nib_hi(qb[$i]) + 16.0 * bits4(qh, 16u + 4u * $i)) + dm.y;""",
    "q4_k": _k_scale_min(9) + """  let d = dd.x * sm.x;
  let m = dd.y * sm.y;
  let sh = vec4<u32>(0u, 8u, 16u, 24u) + 4u * (j & 1u);
  let qa = {B}[s * 9u + 1u + 2u * (j >> 1u)];
  let qb = {B}[s * 9u + 2u + 2u * (j >> 1u)];
%4  o[$i] = d * vec4<f32>((vec4<u32>(qa[$i]) >> sh) & vec4<u32>(15u)) - m; o[4 + $i] = d * vec4<f32>((vec4<u32>(qb[$i]) >> sh) & vec4<u32>(15u)) - m;""",
    "q5_k": _k_scale_min(11) + """  let d = dd.x * sm.x;
  let m = dd.y * sm.y;
  let sh = vec4<u32>(0u, 8u, 16u, 24u) + 4u * (j & 1u);
  let shh = vec4<u32>(0u, 8u, 16u, 24u) + j;
  let qa = {B}[s * 11u + 3u + 2u * (j >> 1u)];
  let qb = {B}[s * 11u + 4u + 2u * (j >> 1u)];
  let ha = {B}[s * 11u + 1u];
  let hb = {B}[s * 11u + 2u];
%4  o[$i] = d * vec4<f32>(((vec4<u32>(qa[$i]) >> sh) & vec4<u32>(15u)) | (((vec4<u32>(ha[$i]) >> shh) & vec4<u32>(1u)) << vec4<u32>(4u))) - m; o[4 + $i] = d * vec4<f32>(((vec4<u32>(qb[$i]) >> sh) & vec4<u32>(15u)) | (((vec4<u32>(hb[$i]) >> shh) & vec4<u32>(1u)) << vec4<u32>(4u))) - m;""",
    "q2_k": _Q2K_SCALES + """  let d0 = dm.x * f32(sc0);
  let d1 = dm.x * f32(sc1);
  let m0 = dm.y * f32(mn0);
  let m1 = dm.y * f32(mn1);
  let sh = vec4<u32>(0u, 8u, 16u, 24u) + 2u * (j & 3u);
  let qa = {B}[qw];
  let qb = {B}[qw + 1u];
%4  o[$i] = d0 * vec4<f32>((vec4<u32>(qa[$i]) >> sh) & vec4<u32>(3u)) - m0; o[4 + $i] = d1 * vec4<f32>((vec4<u32>(qb[$i]) >> sh) & vec4<u32>(3u)) - m1;""",
    "q3_k": _Q3K_SCALES + """  let d0 = d * f32(sc0);
  let d1 = d * f32(sc1);
  let sh = vec4<u32>(0u, 8u, 16u, 24u) + 2u * (j & 3u);
  let shh = vec4<u32>(0u, 8u, 16u, 24u) + j;
  let qa = {B}[qw];
  let qb = {B}[qw + 1u];
  let ha = {B}[s * 7u];
  let hb = {B}[s * 7u + 1u];
%4  o[$i] = d0 * (vec4<f32>(((vec4<u32>(qa[$i]) >> sh) & vec4<u32>(3u)) | (((vec4<u32>(ha[$i]) >> shh) & vec4<u32>(1u)) << vec4<u32>(2u))) - 4.0); o[4 + $i] = d1 * (vec4<f32>(((vec4<u32>(qb[$i]) >> sh) & vec4<u32>(3u)) | (((vec4<u32>(hb[$i]) >> shh) & vec4<u32>(1u)) << vec4<u32>(2u))) - 4.0);""",
    "iq4_nl": """  let g = r * {NU}u + u;
  let d = """ + _half("{OFF1}u") + """;
  let qb = {B}[g];
%4  o[$i] = d * FN_f32(qb[$i], 0u); o[4 + $i] = d * FN_f32(qb[$i], 4u);""",
    "iq4_xs": _IQ4XS_SCALE + """  let qb = {B}[g];
%4  o[$i] = dl * FN_f32(qb[$i], 0u); o[4 + $i] = dl * FN_f32(qb[$i], 4u);""",
    "mxfp4": _MXFP4_SCALE + """  let qb = {B}[g];
%4  o[$i] = d * vec4<f32>(FN_e2m1(qb[$i], 0u)); o[4 + $i] = d * vec4<f32>(FN_e2m1(qb[$i], 4u));""",
    "q6_k": _Q6K_SCALES + """  let shl = vec4<u32>(0u, 8u, 16u, 24u) + 4u * (qq >> 1u);
  let shh = vec4<u32>(0u, 8u, 16u, 24u) + 2u * qq;
  let la = {B}[s * 13u + 4u * hf + 2u * (qq & 1u)];
  let lb = {B}[s * 13u + 4u * hf + 2u * (qq & 1u) + 1u];
  let ha = {B}[s * 13u + 8u + 2u * hf];
  let hb = {B}[s * 13u + 9u + 2u * hf];
%4  o[$i] = sc0 * (vec4<f32>(((vec4<u32>(la[$i]) >> shl) & vec4<u32>(15u)) | (((vec4<u32>(ha[$i]) >> shh) & vec4<u32>(3u)) << vec4<u32>(4u))) - 32.0); o[4 + $i] = sc1 * (vec4<f32>(((vec4<u32>(lb[$i]) >> shl) & vec4<u32>(15u)) | (((vec4<u32>(hb[$i]) >> shh) & vec4<u32>(3u)) << vec4<u32>(4u))) - 32.0);""",
}


def unroll(code: str) -> str:
    """Expand `%N` lines: N copies, `$i` -> 0..N-1, each in its own block."""
    out = []
    for line in code.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith("%"):
            n, _, body = stripped[1:].partition(" ")
            indent = line[: len(line) - len(stripped)]
            out += [f"{indent}{{ {body.strip().replace('$i', str(i))} }}" for i in range(int(n))]
        else:
            out.append(line)
    return "\n".join(out)


WGSL_HELPERS += """
// 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block whose first 16 bytes are h.
fn q4k_scale_min(h: vec4<u32>, j: u32) -> vec2<f32> {
  let b = array<u32, 12>(h.y & 255u, (h.y >> 8u) & 255u, (h.y >> 16u) & 255u, h.y >> 24u,
                         h.z & 255u, (h.z >> 8u) & 255u, (h.z >> 16u) & 255u, h.z >> 24u,
                         h.w & 255u, (h.w >> 8u) & 255u, (h.w >> 16u) & 255u, h.w >> 24u);
  if (j < 4u) { return vec2<f32>(f32(b[j] & 63u), f32(b[j + 4u] & 63u)); }
  return vec2<f32>(f32((b[j + 4u] & 15u) | ((b[j - 4u] >> 6u) << 4u)),
                   f32((b[j + 4u] >> 4u) | ((b[j] >> 6u) << 4u)));
}
"""

# IQ4_NL/IQ4_XS's values (llama.cpp's kvalues_iq4nl), as a polynomial of the 4-bit index n:
# IQ4_VALUES[n] = round(p(n)), p(n) = (((c4 n + c3) n + c2) n + c1) n - 127, within 0.44 of each
# value (a minimax fit): four multiply-adds a value and no table (WGSL has no byte permute, and
# a table in memory would need every kernel that reads a format to fill it first). Both ends
# go without conversion instructions, which GPUs run at a fraction of their float rate: n as a
# float is the bits of 2^23 + n less 2^23, and adding 1.5 * 2^23 (in the constant term)
# leaves round(p(n)) in the low bits of the float's word, so that its low byte is the int8
# (llvmpipe's compiler was seen to drop a rounding done as (x + c) - c in floats).
IQ4_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
_IQ4_POLY = ("0.0014480185", "0.03627325", "-1.4385637", "24.500599")
_IQ4_HELPERS = """
// table values of the four indices in bits s..s+3 of each byte of w, as the words of the floats
// 1.5 * 2^23 + value (the value's int8 in the low byte)
fn FN_kv(w: u32, s: u32) -> vec4<u32> {
  let n = bitcast<vec4<f32>>(((vec4<u32>(w) >> vec4<u32>(s, s + 8u, s + 16u, s + 24u)) & vec4<u32>(15u)) | vec4<u32>(0x4b000000u)) - 8388608.0;
  return bitcast<vec4<u32>>((((C4 * n + C3) * n + C2) * n + C1) * n + 12582785.0);
}
// the values as floats, from their int8s (value + 128 = the int8's byte ^ 0x80, as the float
// 2^23 + value + 128): float arithmetic on the words above would be undone by a compiler that
// reassociates (x + c) - c to x
fn FN_f32(w: u32, s: u32) -> vec4<f32> { return bitcast<vec4<f32>>((FN_kv(w, s) & vec4<u32>(255u)) ^ vec4<u32>(0x4b000080u)) - 8388736.0; }
fn FN_i8(w: u32, s: u32) -> u32 { return pack4xI8(bitcast<vec4<i32>>(FN_kv(w, s))); }  // (the low bytes)
"""
for _i, _c in enumerate(reversed(_IQ4_POLY)):
    _IQ4_HELPERS = _IQ4_HELPERS.replace(f"C{_i + 1}", _c)
# q3_k's scale i (0..15) of a super-block whose scales are words x, y, z of v, less 32: low 4
# bits in byte i % 8 (bits 4 (i / 8)), high 2 bits in byte 8 + i % 4 (bits 2 (i / 4))
_Q3K_HELPERS = """
fn FN_scale(v: vec4<u32>, i: u32) -> i32 {
  let lo = (v[(i >> 2u) & 1u] >> (8u * (i & 3u) + 4u * (i >> 3u))) & 15u;
  let hi = (v.z >> (8u * (i & 3u) + 2u * (i >> 2u))) & 3u;
  return i32(lo | (hi << 4u)) - 32;
}
"""
# mxfp4's doubled e2m1 values (0, 1, 2, 3, 4, 6, 8, 12, sign in bit 3) of the four codes in bits
# s..s+3 of each byte of w: magnitude m < 2 as it is, else (2 + its low bit) << (m / 2 - 1)
_MXFP4_HELPERS = """
fn FN_e2m1(w: u32, s: u32) -> vec4<i32> {
  let n = (vec4<u32>(w) >> vec4<u32>(s, s + 8u, s + 16u, s + 24u)) & vec4<u32>(15u);
  let m = n & vec4<u32>(7u);
  let v = vec4<i32>(select((vec4<u32>(2u) + (m & vec4<u32>(1u))) << ((m >> vec4<u32>(1u)) - vec4<u32>(1u)), m, m < vec4<u32>(2u)));
  return select(v, -v, (n & vec4<u32>(8u)) != vec4<u32>(0u));
}
"""
_FORMAT_HELPERS = {"q3_k": _Q3K_HELPERS, "iq4_nl": _IQ4_HELPERS, "iq4_xs": _IQ4_HELPERS, "mxfp4": _MXFP4_HELPERS}

FORMATS: dict[str, Format] = {
    "f32": Format("f32", 1, 4, False),
    "f16": Format("f16", 1, 2, False),
    "bf16": Format("bf16", 1, 2, False),
    "q8_0": Format("q8_0", 32, 34, True),
    "q4_0": Format("q4_0", 32, 18, True),
    "q4_1": Format("q4_1", 32, 20, True),
    "q5_0": Format("q5_0", 32, 22, True),
    "q5_1": Format("q5_1", 32, 24, True),
    "q4_k": Format("q4_k", 256, 144, True),
    "q5_k": Format("q5_k", 256, 176, True),
    "q6_k": Format("q6_k", 256, 210, True),
    "q2_k": Format("q2_k", 256, 84, True),
    "q3_k": Format("q3_k", 256, 110, True),
    "iq4_nl": Format("iq4_nl", 32, 18, True),
    "iq4_xs": Format("iq4_xs", 256, 136, True),
    "mxfp4": Format("mxfp4", 32, 17, True),
}

# GGML type ids (ggml.h) of the formats above
GGML_TYPES = {0: "f32", 1: "f16", 30: "bf16", 8: "q8_0", 2: "q4_0", 3: "q4_1", 6: "q5_0",
              7: "q5_1", 12: "q4_k", 13: "q5_k", 14: "q6_k", 10: "q2_k", 11: "q3_k", 20: "iq4_nl",
              23: "iq4_xs", 39: "mxfp4"}
