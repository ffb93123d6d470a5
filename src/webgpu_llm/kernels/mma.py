"""The prompt matmuls on the GPU's matrix units (Dawn's `chromium-experimental-subgroup-matrix`,
tensor cores on NVIDIA through Vulkan's cooperative matrices): int8 tiles for weights of one
scale a unit (formats.MMA_FORMATS), f16 tiles for float weights and any other format.

## int8 tiles

Per 32-input unit, x is quantized to int8 with a scale per token and unit (as the int8 mat-vec
does), and the weights stay the int8s of their format, so a unit of y is
    sum_k w x = d_w d_x (q_w . q_x) + m_w d_x sum(q_x)
and the matrix units compute the integer products q_w . q_x for a 16 x 16 tile at a time
(16 tokens x 16 weight rows x 32 inputs, i8 x i8 -> i32). Each unit's scales differ, so the
integer tile goes through workgroup memory after every unit and each thread scales its share
into f32 accumulators.

x is quantized once, by `quantize_kernel` (quantized by every workgroup it cost a third of
the matmul). A workgroup takes 64 tokens x 64 weight rows (32 row
pairs, the epilogues' unit) with 128 threads, four 32-thread slices of 32 tokens x 32 rows
(2 x 2 tiles each). Per unit: threads 0-63 copy one token's int8s, threads 64-127 unpack one
weight row, into workgroup memory; each slice multiplies its tiles and stores them; each
thread then scales one weight row of its slice for 32 tokens. The next unit's loads are in
flight meanwhile. At the end the accumulators go through workgroup memory once more so that
each epilogue call gets a row pair.

`emulate=True` computes the tiles with `dot4I8Packed` instead of the matrix units (same
workgroup memory, same everything else): the kernel's logic is tested on adapters without
subgroup matrices (llvmpipe), the matrix units on the GPUs that have them.

## f16 tiles

Weights of any format are dequantized (`load_row`) and x converted into f16 tiles in
workgroup memory, a unit (32 inputs) at a time; the products accumulate in f32 in the
subgroup matrices themselves over all of K (no per-unit scale), so workgroup memory holds only
the staged unit. A workgroup of `TileShape.sm x sn` subgroups each owns `tm x tn` 16 x 16
output tiles; at the end each tile goes through a small scratch in workgroup memory so that
the epilogue gets row pairs. `emulate=True` keeps the accumulators in registers, computed with
f32 dot products of the same staged f16s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..runtime.gpu import Gpu
from ..runtime.program import Kernel
from .common import Signature
from .formats import FORMATS, MMA_FORMATS, NO_MINIMUM, UNIT, WGSL_HELPERS, unroll
from .linear import QUANT_UNIT, LinearSpec, TokenRows, by_segment, epilogue_wgsl, loaders_wgsl, rows_wgsl

TILE = 16  # tile rows and columns (tokens, weight rows) of the i8 16 x 16 x 32 configuration
BM = 64  # tokens per workgroup
BN = 64  # weight rows per workgroup (32 pairs)
WG = 128  # threads: four slices of 32


def mma_ok(spec: LinearSpec) -> bool:
    """Can this prompt matmul run on the int8 matrix units (formats, plain input)?"""
    return (spec.prologue == "plain" and not spec.last_row
            and all(s.fmt in MMA_FORMATS for s in spec.segments))


# what a kernel on the matrix units starts with: the slice a subgroup takes is its
# subgroup_id, which the uniformity analysis does not see as uniform over the subgroup
MATRIX_HEAD = ("enable subgroups;\nenable chromium_experimental_subgroup_matrix;\n"
               "diagnostic(off, chromium_experimental.subgroup_matrix_uniformity);\n")


def usable(gpu: Gpu) -> bool:
    """Does this device run these kernels on its matrix units?"""
    return has_int8_mma(gpu.subgroup_matrix_configs)


# float weights that go on the f16 tiles by default (f32 keeps its precision on the f32 matmul)
F16_FORMATS = ("f16", "bf16")


def f16_ok(spec: LinearSpec, every_format: bool = False) -> bool:
    """Can this prompt matmul run on the f16 tiles (float weights, or with `every_format`
    any format but f32, dequantized while staging)?"""
    ok = F16_FORMATS if not every_format else tuple(f for f in FORMATS if f != "f32")
    return (spec.prologue == "plain" and not spec.last_row
            and all(s.fmt in ok for s in spec.segments))


def has_f16_mma(configs: list[dict[str, Any]], sums: str = "f32") -> bool:
    """Does the adapter list f16 x f16 -> `sums` 16 x 16 x 16 tiles on 32-wide subgroups (f16
    sums: TileShape.acc16)?"""
    return any(c.get("component_type") == "f16" and c.get("result_component_type") == sums
               and (c.get("m"), c.get("n"), c.get("k")) == (16, 16, 16)
               and c.get("min_subgroup_size") == c.get("max_subgroup_size") == 32 for c in configs)


def f16_tiles_ok(gpu: Gpu) -> bool:
    """Does this device offer the f16 tiles (shader-f16 and the f16 x f16 -> f32 configuration)?"""
    return gpu.has_f16 and has_f16_mma(gpu.subgroup_matrix_configs)


def f16_usable(gpu: Gpu) -> bool:
    """Does this device run the f16 tiles on its matrix units, correctly? Dawn offers f16 on
    NVIDIA's Vulkan driver only behind a toggle (runtime/gpu.py turns it on), as old drivers
    miscompiled some f16 code, so the tiles are checked against numpy once per device."""
    return f16_tiles_ok(gpu) and gpu.check("f16_tiles", lambda: _f16_tiles_work(gpu))


def _f16_tiles_work(gpu: Gpu) -> bool:
    """The f16 tiles' matmul on random f16 weights (odd sizes, two workgroups each way)
    within f16 rounding of numpy's."""
    import numpy as np

    from .common import agrees
    from .linear import Segment

    rng = np.random.default_rng(0)
    t, rows, k = 70, 75, 96
    w = rng.standard_normal((rows, k)).astype(np.float16)
    x = rng.standard_normal((t, k)).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment("f16", rows),))
    want = x.astype(np.float16).astype(np.float32) @ w.astype(np.float32).T
    return agrees(gpu, f16_matmul_kernel(spec), {"x": x, "w0": FORMATS["f16"].pack(w, k)}, "y", want,
                  f16_matmul_grid(spec)(t), n=t)


def has_int8_mma(configs: list[dict[str, Any]]) -> bool:
    """Does the adapter list the configuration these kernels use (i8 x i8 -> i32, 16 x 16 x
    32, 32-wide subgroups)?"""
    return any(c.get("component_type") == "i8" and c.get("result_component_type") == "i32"
               and (c.get("m"), c.get("n"), c.get("k")) == (TILE, TILE, UNIT)
               and c.get("min_subgroup_size") == c.get("max_subgroup_size") == 32 for c in configs)


def _block_order(tokens_first: bool) -> tuple[str, str, str]:
    """WGSL of a workgroup's (weight block, token block) and the builtin that takes: the grid's
    own order (every weight block of a token block in turn), or with `tokens_first` every
    token block of a weight block in turn, so that a weight tile is read from memory once,
    while it sits in L2."""
    if not tokens_first:
        return "wid.x", "wid.y", ""
    lin = "(wid.y * nwg.x + wid.x)"
    return f"({lin} / nwg.y)", f"({lin} % nwg.y)", ", @builtin(num_workgroups) nwg: vec3<u32>"


def _tiles_wgsl(emulate: bool) -> str:
    """`fn tile_products(s, lane)`: slice s's four integer tiles into cs[s]. Slice s = (token
    half s / 2, row half s % 2) of the workgroup's tile; tile (a, b) of a slice: its tokens
    16a.., rows 16b.., stored row-major (token, row) at cs[(4 s + 2 a + b) * 256]."""
    if not emulate:
        return """
fn tile_products(s: u32, lane: u32) {
  let t0 = (s / 2u) * 32u;
  let r0 = (s % 2u) * 32u;
  let a0 = subgroupMatrixLoad<subgroup_matrix_left<i8, 32, 16>>(&xq8, t0 * XW * 4u, false, XW * 4u);
  let a1 = subgroupMatrixLoad<subgroup_matrix_left<i8, 32, 16>>(&xq8, (t0 + 16u) * XW * 4u, false, XW * 4u);
  let b0 = subgroupMatrixLoad<subgroup_matrix_right<i8, 16, 32>>(&wq, r0 * XW * 4u, true, XW * 4u);
  let b1 = subgroupMatrixLoad<subgroup_matrix_right<i8, 16, 32>>(&wq, (r0 + 16u) * XW * 4u, true, XW * 4u);
  subgroupMatrixStore(&cs, (4u * s) * TS, subgroupMatrixMultiply<i32>(a0, b0), false, CW);
  subgroupMatrixStore(&cs, (4u * s + 1u) * TS, subgroupMatrixMultiply<i32>(a0, b1), false, CW);
  subgroupMatrixStore(&cs, (4u * s + 2u) * TS, subgroupMatrixMultiply<i32>(a1, b0), false, CW);
  subgroupMatrixStore(&cs, (4u * s + 3u) * TS, subgroupMatrixMultiply<i32>(a1, b1), false, CW);
}
"""
    return """
fn tile_products(s: u32, lane: u32) {
  let t0 = (s / 2u) * 32u;
  let r0 = (s % 2u) * 32u;
  for (var e = lane; e < 1024u; e += 32u) {
    let tile = e / 256u;
    let tr = (e % 256u) / 16u;
    let tc = e % 16u;
    let t = t0 + (tile / 2u) * 16u + tr;
    let r = r0 + (tile % 2u) * 16u + tc;
    var acc = 0;
    for (var w = 0u; w < 8u; w++) {
      acc += dot4I8Packed(bitcast<u32>(xq8[t * XW + w]), bitcast<u32>(wq[r * XW + w]));
    }
    cs[(4u * s + tile) * TS + tr * CW + tc] = acc;
  }
}
"""


# Staged rows of 12 words (8 hold a unit of int8s): the tile loads' bank conflicts fewer,
# gate/up -5 %, QKV -6 %; padding the integer tiles' rows was slower (more workgroup memory,
# fewer workgroups a SM)
XW = 12
CW = 16  # i32s a row of an integer tile takes in workgroup memory


def mma_matmul_kernel(spec: LinearSpec, emulate: bool = False, tokens_first: bool = False) -> Kernel:
    """Many tokens (st.n of them) through the int8 matrix units: grid = mma_matmul_grid(spec)(n).
    Same bindings and epilogues as linear.matmul_kernel (K split over grid z included);
    `tokens_first`: the workgroups' order (_block_order)."""
    assert mma_ok(spec), spec
    assert (spec.splits > 1) == (spec.epilogue == "partial")
    assert not (tokens_first and spec.experts and spec.experts.tiles), "a tile list's entry is grid y's"
    sig = Signature().state()
    loaders = [WGSL_HELPERS, "struct QUnit { lo: vec4<u32>, hi: vec4<u32>, dm: vec2<f32> }"]
    count = spec.experts.count if spec.experts else 1
    if spec.experts:
        loaders.append("var<private> ex: u32;")
    for i, seg in enumerate(spec.segments):
        if (err := FORMATS[seg.fmt].check_k(spec.k)):
            raise ValueError(err)
        sig.storage(f"w{i}", "array<vec4<u32>>")
        loaders.append(FORMATS[seg.fmt].wgsl_unit_q(f"q_w{i}", f"w{i}", seg.rows * count, spec.k))
    loaders.append(by_segment(spec, "q_row", ", u: u32", "QUnit", "q_w{i}", "{r}, u"))
    sig.storage("xq", "array<vec4<u32>>")
    sig.storage("xs", "array<vec2<f32>>")
    body = "\n".join([rows_wgsl(spec), *loaders, epilogue_wgsl(spec, sig), _tiles_wgsl(emulate)])
    tiles = TokenRows.of(spec, sig)
    body += tiles.decls
    per = -(-(spec.kp // UNIT) // spec.splits)  # units per K split
    slice_id = "lid / 32u" if emulate else "sgid"
    # a weight minimum (or offset) adds m * (x's sum); q8_0, q3_k and the iq4s have none: one
    # multiply-add less
    m_term = " + dm.y * xs.y" if any(s.fmt not in NO_MINIMUM for s in spec.segments) else ""
    sg_param = "" if emulate else ", @builtin(subgroup_id) sgid: u32"
    bx, by, order_param = _block_order(tokens_first)
    sg_param += order_param
    body = unroll(body + f"""
const NU: u32 = {spec.kp // UNIT}u;
const XW: u32 = {XW}u;
const CW: u32 = {CW}u;
const TS: u32 = {16 * CW}u;  // i32s a tile takes
var<workgroup> xq8: array<i32, {BM * XW}>;  // [token][XW words]: a unit of int8s
var<workgroup> wq: array<i32, {BN * XW}>;  // [tile row][XW words]
// per token: (scale, scale * sum of its int8s); per tile row: (d, m). Two of each, by the
// unit's parity: the next unit's are written while this one's are still being read
var<workgroup> xd: array<vec2<f32>, {2 * BM}>;
var<workgroup> wd: array<vec2<f32>, {2 * BN}>;
var<workgroup> cs: array<i32, {max(BM * BN, 16 * 16 * CW)}>;  // the slices' integer tiles; at the end, y's f32 bits
var<private> split: u32;
@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32{sg_param}) {{{tiles.first}
  let nt = {tiles.count};
  {tiles.start(by, BM)}
  let p0 = {spec.pair0}u + {bx} * {BN // 2}u;
  split = wid.z;
  let u0 = {"0u" if spec.experts else "wid.z"} * {per}u;
  let u1 = min(NU, u0 + {per}u);
  // what this thread stages: token m0 + lid's x (lid < 64), or tile row lid - 64's weights
  let xt = m0 + lid;
  let xrow = ({tiles.x_row("xt")}) * NU;
  let c = lid - {BM}u;  // tile row 2q + member of pair p0 + q
  let p = p0 + c / 2u;
  let r = min(select(row0(p), row1(p), (c & 1u) == 1u), N - 1u);
  var xr: array<vec4<u32>, 2>;  // (tokens past the batch's stay zero)
  var xsr = vec2<f32>(0.0);
  var wr: QUnit;
  if (lid < {BM}u) {{
    if (xt < nt) {{
      xr[0] = xq[2u * (xrow + u0)]; xr[1] = xq[2u * (xrow + u0) + 1u]; xsr = xs[xrow + u0];
    }}
  }} else {{
    wr = q_row(r, u0);
  }}
  // what this thread scales: tile row (lid % 64) of its slice's rows, for the slice's 32 tokens
  let s = lid / 32u;
  let lane = lid % 32u;
  let col = (s % 2u) * 32u + lane;
  let tb = (s / 2u) * 32u;
  var acc: array<f32, 32>;
  for (var u = u0; u < u1; u++) {{
    if (lid < {BM}u) {{
%4      xq8[lid * XW + $i] = bitcast<i32>(xr[0][$i]); xq8[lid * XW + 4u + $i] = bitcast<i32>(xr[1][$i]);
      xd[(u & 1u) * {BM}u + lid] = xsr;
    }} else {{
%4      wq[c * XW + $i] = bitcast<i32>(wr.lo[$i]); wq[c * XW + 4u + $i] = bitcast<i32>(wr.hi[$i]);
      wd[(u & 1u) * {BN}u + c] = wr.dm;
    }}
    workgroupBarrier();
    if (u + 1u < u1) {{  // the next unit's loads, in flight while this one is multiplied
      if (lid < {BM}u) {{
        if (xt < nt) {{
          xr[0] = xq[2u * (xrow + u + 1u)]; xr[1] = xq[2u * (xrow + u + 1u) + 1u]; xsr = xs[xrow + u + 1u];
        }}
      }} else {{
        wr = q_row(r, u + 1u);
      }}
    }}
    tile_products({slice_id}, lane);
    workgroupBarrier();
    let dm = wd[(u & 1u) * {BN}u + col];
%32    {{ let xs = xd[(u & 1u) * {BM}u + tb + $i]; acc[$i] += dm.x * xs.x * f32(cs[(4u * s + ($i / 16u) * 2u + lane / 16u) * TS + ($i % 16u) * CW + lane % 16u]){m_term}; }}
  }}
  // the accumulators by (token, tile row), so that each epilogue call gets a row pair
  workgroupBarrier();
%32  cs[(tb + $i) * {BN}u + col] = bitcast<i32>(acc[$i]);
  workgroupBarrier();
  let q = lid % 32u;
%16  {{ let tt = lid / 32u + 4u * $i; let t = m0 + tt; if (t < nt && p0 + q < NP) {{ epi({tiles.out}t, p0 + q, bitcast<f32>(cs[tt * {BN}u + 2u * q]), bitcast<f32>(cs[tt * {BN}u + 2u * q + 1u])); }} }}
}}
""")
    name = (f"mma_matmul_{spec.epilogue}_{'+'.join(s.fmt for s in spec.segments)}{'_tokens_first' if tokens_first else ''}"
            f"{'_emulated' if emulate else ''}")
    k = sig.kernel(name, body)
    # directives go before every declaration
    return k if emulate else Kernel(k.name, MATRIX_HEAD + k.wgsl, k.bindings)


def quantize_kernel(k: int, per_token: int = 1) -> Kernel:
    """x (st.n * per_token rows of k values, k a multiple of 32) as int8 units: xq[2 (t NU +
    u) ..] the unit's int8s four to a word, xs[t NU + u] its (scale, scale * sum of the
    int8s); one thread a unit. The matmul's input, quantized once instead of by each of its
    workgroups (`per_token`: an MoE layer's rows of the chosen experts' activations)."""
    sig = Signature().state()
    sig.storage("x", "array<vec4<f32>>")
    sig.storage("xq", "array<vec4<u32>>", write=True)
    sig.storage("xs", "array<vec2<f32>>", write=True)
    nu = k // UNIT
    body = unroll(QUANT_UNIT + f"""
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
  let i = gid.x;
  if (i >= st.n * {nu * per_token}u) {{ return; }}
  let t = i / {nu}u;
  let u = i % {nu}u;
  var v: array<vec4<f32>, 8>;
%8  v[$i] = x[t * {k // 4}u + u * 8u + $i];
  let q = quant_unit(v);
  xq[2u * i] = vec4<u32>(q.w[0], q.w[1], q.w[2], q.w[3]);
  xq[2u * i + 1u] = vec4<u32>(q.w[4], q.w[5], q.w[6], q.w[7]);
  xs[i] = q.d;
}}
""")
    return sig.kernel(f"quantize_units_{k}" + (f"x{per_token}" if per_token > 1 else ""), body)


def quantize_grid(k: int, per_token: int = 1):
    return lambda n: (-(-n * per_token * (k // UNIT) // 64), 1, 1)


def mma_matmul_grid(spec: LinearSpec, bm: int = BM, bn: int = BN):
    """Of the token count n (an expert gets at most one (token, slot) pair a token), for
    workgroups of bm tokens x bn weight rows."""
    gx = -(-spec.part_pairs // (bn // 2))
    if spec.experts:
        return lambda n: (gx, *spec.experts.grid_yz(n, bm))
    return lambda n: (gx, -(-n // bm), spec.splits)


@dataclass(frozen=True)
class TileShape:
    """An f16-tile matmul's workgroup: sm x sn subgroups of 32, each tm x tn tiles of 16 x 16
    (tokens x weight rows); `tokens_first`: the workgroups' order (_block_order); `double`:
    double-buffered staging."""

    sm: int = 2
    sn: int = 2
    tm: int = 2
    tn: int = 2
    tokens_first: bool = False
    # two staging buffers used in turn: a step's inputs are written while the step before is
    # still being multiplied, one barrier a step instead of two
    double: bool = False
    ku: int = 1  # units of 32 inputs staged a step (the multiply-adds between two barriers)
    # the next step's loads without a branch around them (the last step reloads its own unit):
    # the loop's body one block, in which the compiler may place the step's multiplies while
    # those loads are in flight, where the branch made it finish them (and dequantizing the
    # weights, which waits on them) first
    straight: bool = False
    # steps whose loads are in flight at once: 2 requests a unit's words two steps before its
    # staging (a second set of registers; straight). f16 weights and the formats with split
    # loads (Format.split_words) travel as words until staged; the others are dequantized as
    # they arrive (load_row), so their loads still hold up the step that requests them
    depth: int = 1
    # f16 weights: each weight row staged by wg / bn threads, each a part of the unit's words,
    # where one thread a row leaves the others (wg - bn of them) staging x alone
    spread: bool = False
    # the sums kept as f16s (the f16 -> f16 tiles, as cuBLAS's f16 compute type): half the
    # registers a subgroup's accumulators take, so more workgroups fit a multiprocessor, for
    # sums rounded to f16 at every step (and limited to its range)
    acc16: bool = False
    # f16 words staged through bitcast<vec2<f16>> (Tint's; naga rejects it, so the emulated
    # kernels keep unpack2x16float): no conversion to f32 and back per value
    bitcast: bool = False

    @property
    def label(self) -> str:
        """sm x sn x tm x tn and what else sets the kernel apart, e.g. "4x2x2x4 double" (bench's
        JSON: which tiles a prompt matmul ran on)."""
        extras = [name for name, on in (("double", self.double), ("f16 sums", self.acc16), ("tokens first", self.tokens_first),
                                        ("spread", self.spread), ("bitcast", self.bitcast)) if on]
        if self.ku > 1:
            extras.append(f"{self.ku} units")
        if self.depth > 1:
            extras.append(f"depth {self.depth}")
        return " ".join([f"{self.sm}x{self.sn}x{self.tm}x{self.tn}", *extras])

    @property
    def bm(self) -> int:
        return 16 * self.tm * self.sm

    @property
    def sums(self) -> str:
        """The WGSL type of the subgroups' sums (and of the scratch their tiles go through)."""
        return "f16" if self.acc16 else "f32"

    @property
    def bn(self) -> int:
        return 16 * self.tn * self.sn

    @property
    def wg(self) -> int:
        return 32 * self.sm * self.sn

    @property
    def xh(self) -> int:
        """f16s a staged row takes: a step's 32 ku inputs and 8 against bank conflicts."""
        return 32 * self.ku + 8

    @property
    def shared_bytes(self) -> int:
        """Workgroup memory the f16 matmul takes: its staged rows (twice, double-buffered) and
        a tile of each subgroup."""
        return (self.bm + self.bn) * self.xh * 2 * (2 if self.double else 1) + self.sm * self.sn * 256 * (2 if self.acc16 else 4)

    def check(self) -> None:
        if self.bn > self.wg or self.bm * 8 * self.ku % self.wg:
            raise ValueError(f"f16 tile shape {self}: a thread stages one weight row and whole x words")
        if self.depth not in (1, 2):
            raise ValueError(f"f16 tile shape {self}: depth is 1 or 2")


def tile_code(shape: TileShape, emulate: bool, xo: str = "", wo: str = "", n: str = "n",
              at: str = "s * 256u") -> tuple[str, str, str]:
    """WGSL of a subgroup's tm x tn tiles of 16 x 16 f32 sums over f16 inputs staged in
    workgroup memory, for every f16-tile kernel: the start (which subgroup a thread is in, s,
    its lane, the first rows of xh and wh its tiles take, ts and rs, and its accumulators); the products
    of one step of 32 ku inputs (left: rows ts.. of `xh`, right: rows rs.. of `wh`, each row XH f16s
    apart, from `xo` and `wo`: WGSL prefixes "offset + " of the staging buffer in use); and the
    store of tile `n` (a runtime index) to the scratch `cs` at `at` (default s * 256), row-major
    16 x 16. `emulate`: the products as f32 dot products of the same f16s, without matrix
    units (runtime loops from `z`, a zero the compiler cannot see, as llvmpipe compiles
    unrolled copies slowly)."""
    tm, tn = shape.tm, shape.tn
    tile_ids = [(i, j) for i in range(tm) for j in range(tn)]
    nt_ = tm * tn
    nv = n if n.isidentifier() else f"({n})"
    start = f"""  // the subgroup whose tiles this thread multiplies: rows ts.. of xh, rows rs.. of wh
  let s = {"lid / 32u" if emulate else "sgid"};
  let lane = lid % 32u;
  let z = lid / {shape.wg}u;  // 0
  let ts = (s / {shape.sn}u) * {16 * tm}u;
  let rs = (s % {shape.sn}u) * {16 * tn}u;
"""
    if emulate:
        # (initialized explicitly: Tint and naga zero a declaration without one only once, not
        # each time a loop runs it, as Experts.loop's does)
        acc_decl = start + f"  var acc = array<f32, {nt_ * 8}>();"
        products = f"""    for (var e = lane; e < {nt_ * 256}u; e += 32u) {{
      let n = e / 256u;
      let xa = {xo}(ts + (n / {tn}u) * 16u + (e % 256u) / 16u) * XH;
      let wa = {wo}(rs + (n % {tn}u) * 16u + e % 16u) * XH;
      var d = 0.0;
      for (var k = z; k < {32 * shape.ku}u; k++) {{ d += f32(xh[xa + k]) * f32(wh[wa + k]); }}
      acc[e / 32u] {"= f32(f16(acc[e / 32u] + d))" if shape.acc16 else "+= d"};
    }}"""
        store = f"    for (var v = 0u; v < 8u; v++) {{ cs[{at} + lane + 32u * v] = {shape.sums}(acc[{nv} * 8u + v]); }}"
        return acc_decl, products, store
    acc_decl = start + "\n".join(f"  var acc{i}{j} = subgroup_matrix_result<{shape.sums}, 16, 16>();" for i, j in tile_ids)
    lines = []
    for kk in range(0, 32 * shape.ku, 16):
        for i in range(tm):
            lines.append(f"    let a{i}_{kk} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&xh, {xo}(ts + {16 * i}u) * XH + {kk}u, false, XH);")
        for j in range(tn):
            lines.append(f"    let b{j}_{kk} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&wh, {wo}(rs + {16 * j}u) * XH + {kk}u, true, XH);")
        for i, j in tile_ids:
            lines.append(f"    acc{i}{j} = subgroupMatrixMultiplyAccumulate(a{i}_{kk}, b{j}_{kk}, acc{i}{j});")
    store = "\n".join(f"    {'if' if k == 0 else 'else if'} ({nv} == {k}u) {{ subgroupMatrixStore(&cs, {at}, acc{i}{j}, false, 16u); }}"
                      for k, (i, j) in enumerate(tile_ids))
    return acc_decl, "\n".join(lines), store


def _pair_outs(shape: TileShape, store: str, out: str) -> str:
    """The end of a tile matmul with adjacent pairs: each tile through the scratch of its
    slice, stored by the slice's subgroup (`store`, tile_code's), read by threads 32 es..
    (es = lid / 32) so that each epilogue call gets a row pair (`out`: TokenRows.out)."""
    sn, tm, tn = shape.sn, shape.tm, shape.tn
    return f"""  let es = lid / 32u;
  for (var n = 0u; n < {tm * tn}u; n++) {{
{store}
    workgroupBarrier();
    for (var v = 0u; v < 4u; v++) {{  // 16 tokens x 8 row pairs of slice es's tile n
      let e = lane + 32u * v;
      let t = m0 + (es / {sn}u) * {16 * tm}u + (n / {tn}u) * 16u + e / 8u;
      let q = p0 + ((es % {sn}u) * {16 * tn}u + (n % {tn}u) * 16u) / 2u + e % 8u;
      let c = es * 256u + (e / 8u) * 16u + 2u * (e % 8u);
      if (t < nt && q < NP) {{ epi({out}t, q, f32(cs[c]), f32(cs[c + 1u])); }}
    }}
    workgroupBarrier();
  }}"""


def f16_matmul_kernel(spec: LinearSpec, shape: TileShape = TileShape(), emulate: bool = False) -> Kernel:
    """Many tokens (st.n of them) through f16 tiles: grid = f16_matmul_grid(spec, shape)(n).
    Same bindings and epilogues as linear.matmul_kernel (K split over grid z included)."""
    assert f16_ok(spec, every_format=True), spec
    assert (spec.splits > 1) == (spec.epilogue == "partial")
    shape.check()
    sm, sn, tm, tn, bm, bn, wg = shape.sm, shape.sn, shape.tm, shape.tn, shape.bm, shape.bn, shape.wg
    for seg in spec.segments:
        if (err := FORMATS[seg.fmt].check_k(spec.k)):
            raise ValueError(err)
    sig = Signature().state()
    xf16 = spec.x_f16
    if xf16 and spec.k % 8:
        raise ValueError(f"f16 x rows need a multiple of 8 inputs, not {spec.k}")
    # x as vec4 words of f32 (4 inputs) or of f16 pairs (8 inputs): XW words a unit of 32
    sig.storage("x", "array<vec4<u32>>" if xf16 else "array<vec4<f32>>")
    xw = 4 if xf16 else 8
    # f16 weights go to the tiles from their raw words (a pair a word: no loader, no clamp)
    raw = all(seg.fmt == "f16" for seg in spec.segments)
    # loads two steps ahead: the other formats with split loads keep a unit's words, not its
    # values, until they are staged (Format.split_words; one format for all segments)
    words = {FORMATS[seg.fmt].split_words() for seg in spec.segments}
    split = shape.depth > 1 and not raw and len(words) == 1 and 0 not in words
    body = "\n".join([rows_wgsl(spec), loaders_wgsl(spec, sig, early=raw or split), epilogue_wgsl(spec, sig)])
    loader = "raw_row" if raw or split else "load_row"
    # threads a weight row (TileShape.spread): f16 weights, a unit's 4 words in whole parts
    parts = wg // bn if shape.spread and raw and wg % bn == 0 and wg // bn in (2, 4) else 1
    if parts > 1:
        body += _raw_parts_wgsl(spec, 4 // parts)
        loader = "raw_part"
    tiles = TokenRows.of(spec, sig)
    body += tiles.decls
    per = -(-(spec.kp // UNIT) // spec.splits)  # units per K split
    ragged = spec.k % UNIT != 0
    ku, xh = shape.ku, shape.xh
    xwords = bm * xw * ku  # x words (vec4) a step stages
    pt = -(-xwords // wg)  # ... each thread (the last word again where they do not divide)
    db = shape.double
    acc_decl, products, store = tile_code(shape, emulate, *(("xb0 + ", "wb0 + ") if db else ("", "")))
    outs = _pair_outs(shape, store, tiles.out)
    zero = "vec4<u32>(0u)" if xf16 else "vec4<f32>(0.0)"
    kw = "K8" if xf16 else "K4"  # x's row stride in words
    xload = "x[xi]" if not ragged else f"select({zero}, x[xi], uu * {xw}u + cc < {kw})"

    def word(off: str) -> str:
        """The x word a thread stages at `off` (WGSL) past its first."""
        return f"lid + {off}" if pt * wg == xwords else f"min(lid + {off}, {xwords - 1}u)"

    # a thread stages one weight row: those past the tile's rows only where there are such threads
    straight = shape.straight or shape.depth > 1
    wif = "" if (straight and bn == wg) or parts > 1 else f"if (lid < {bn}u) "
    wpart = ", wpart" if parts > 1 else ""  # (the part of its row's unit a thread stages)

    def fetch(u: str, wv: str = "w", xv: str = "xr") -> str:
        """The loads of the step starting at unit `u` into registers `wv` (weights) and `xv` (x)."""
        if ku == 1:
            xs_ = "\n".join(f"""    {{ let e = {word(f"{wg * j}u")}; let m = e / {xw}u; let cc = e % {xw}u; let uu = {u};
      let xi = ({tiles.x_row("m0 + m")}) * {kw} + uu * {xw}u + cc;
      {xv}[{j}] = select({zero}, {xload}, m0 + m < nt); }}""" for j in range(pt))
            return f"    {wif}{{ {wv} = {loader}(r, {u}{wpart}); }}\n{xs_}"
        # several units a step: word cc of a token's step is word cc % XW of unit u + cc / XW;
        # units past the split's end stage zeros for x (their weights: the last unit's, times zero)
        xs_ = "\n".join(f"""    {{ let e = {word(f"{wg * j}u")}; let m = e / {xw * ku}u; let uu = {u} + (e % {xw * ku}u) / {xw}u; let cc = e % {xw}u;
      let xi = ({tiles.x_row("m0 + m")}) * {kw} + min(uu, u1 - 1u) * {xw}u + cc;
      {xv}[{j}] = select({zero}, {xload}, m0 + m < nt && uu < u1); }}""" for j in range(pt))
        ws = " ".join(f"{wv}[{j}] = {loader}(r, min({u} + {j}u, u1 - 1u){wpart});" for j in range(ku))
        return f"    {wif}{{ {ws} }}\n{xs_}"

    # an f16 pair from its word (an f16 converts to f32 and back exactly)
    pair = "bitcast<vec2<f16>>({})" if shape.bitcast and not emulate else "vec2<f16>(unpack2x16float({}))"
    if raw:  # 4 words of 2 f16s each of the unit's 4 vec4s (of its 4 / parts vec4s: a part)
        row = "lid * XH" if parts == 1 else f"wrow * XH + wpart * {32 // parts}u"
        w_store = (f"%{16 // parts}      let o = WB0{row} + $i * 2u; let h = {pair.format('w[$i / 4u][$i % 4u]')}; "
                   "wh[o] = h.x; wh[o + 1u] = h.y;")
    else:
        w_store = ("%8      let h = vec4<f16>(clamp(w[$i], -HMAX, HMAX)); let o = WB0lid * XH + $i * 4u; "
                   "wh[o] = h.x; wh[o + 1u] = h.y; wh[o + 2u] = h.z; wh[o + 3u] = h.w;")
    if split:  # each unit's words dequantized as it is staged
        w_store = "\n".join(f"      let wv{j} = dec_row(r, {'w' if ku == 1 else f'w[{j}]'});\n"
                             + w_store.replace("w[$i", f"wv{j}[$i").replace("$i * ", f"{32 * j}u + $i * ")
                             for j in range(ku))
    elif ku > 1:  # each unit's words at its 32 inputs of the row
        w_store = "\n".join(w_store.replace("w[$i", f"w[{j}][$i").replace("$i * ", f"{32 * j}u + $i * ")
                             for j in range(ku))
    w_store = w_store.replace("WB0", "wb0 + " if db else "")
    # the buffers of step u (alternating): a thread writes them once all have multiplied step
    # u - 2, which the barrier of step u - 1 ensures
    step = "u++" if ku == 1 else f"u += {ku}u"
    parity = "(u & 1u)" if ku == 1 else f"((u / {ku}u) & 1u)"  # which buffer step u stages into
    db_offsets = f"\n    let xb0 = {parity} * {bm * xh}u;\n    let wb0 = {parity} * {bn * xh}u;" if db else ""
    wtype = f"array<vec4<u32>, {4 // parts}>" if raw else f"array<vec4<u32>, {min(words)}>" if split else "array<vec4<f32>, 8>"
    wdecl = wtype if ku == 1 else f"array<{wtype}, {ku}>"
    xtype = f"array<vec4<{'u32' if xf16 else 'f32'}>, {pt}>"
    ahead = ""  # depth 2: the registers of the step after the next, and their first loads
    if shape.depth > 1:
        ahead = f"""  var w1: {wdecl};
  var xr1: {xtype};
  {{ let un = min(u0 + {ku}u, u1 - 1u);
{fetch("un", "w1", "xr1")}
  }}"""
        next_loads = f"""    w = w1;
    xr = xr1;
    {{  // the loads of the step after the next, in flight for two steps (past the end: the last unit's)
      let un = min(u + {2 * ku}u, u1 - 1u);
{fetch("un", "w1", "xr1")}
    }}"""
    elif straight:
        next_loads = f"""    {{  // the next unit's loads, in flight while this one is multiplied (the last step: its own)
      let un = min(u + {ku}u, u1 - 1u);
{fetch("un")}
    }}"""
    else:
        next_loads = f"""    if (u + {ku}u < u1) {{  // the next unit's loads, in flight while this one is multiplied
      let un = u + {ku}u;
{fetch("un")}
    }}"""
    xb = "xb0 + " if db else ""
    e_ = word(f"$i * {wg}u")
    if xf16:  # each word's 8 f16s as they are
        x_store = (f"%{pt}    let e = {e_}; let v = xr[$i]; let o = {xb}(e / {4 * ku}u) * XH + (e % {4 * ku}u) * 8u; "
                   + " ".join(f"let h{c} = {pair.format('v.' + c)}; xh[o + {2 * i}u] = h{c}.x; xh[o + {2 * i + 1}u] = h{c}.y;"
                              for i, c in enumerate("xyzw")))
    else:
        x_store = (f"%{pt}    let e = {e_}; let h = vec4<f16>(clamp(xr[$i], -HMAX, HMAX)); let o = {xb}(e / {8 * ku}u) * XH + "
                   f"(e % {8 * ku}u) * 4u; xh[o] = h.x; xh[o + 1u] = h.y; xh[o + 2u] = h.z; xh[o + 3u] = h.w;")
    sg_param = "" if emulate else ", @builtin(subgroup_id) sgid: u32"
    bx, by, order_param = _block_order(shape.tokens_first)
    sg_param += order_param
    # an expert's token blocks past the grid's (Experts.loop): the workgroup takes them in turn
    loop = bool(spec.experts and spec.experts.loop)
    listed = bool(spec.experts and spec.experts.tiles)  # (its entry is grid y's: the plain order)
    assert not (listed and (loop or shape.tokens_first)), "a tile list's grid loops over nothing, in its own order"
    if loop and "nwg" not in sg_param:  # (tokens_first's order reads it already)
        sg_param += ", @builtin(num_workgroups) nwg: vec3<u32>"
    first_block = (f"for (var m0 = {by} * {bm}u; m0 < nt; m0 += nwg.y * {bm}u) {{" if loop
                   else tiles.start(by, bm))
    row_decl = f"\n  let wrow = lid % {bn}u;\n  let wpart = lid / {bn}u;" if parts > 1 else ""
    wrow = "wrow" if parts > 1 else "lid"  # (the tile row of the weights a thread stages)
    body = unroll(body + f"""
const NU: u32 = {spec.kp // UNIT}u;
const K4: u32 = {spec.k // 4}u;{f"{chr(10)}const K8: u32 = {spec.k // 8}u;" if xf16 else ""}
const XH: u32 = {xh}u;
const HMAX = vec4<f32>(65504.0);
var<workgroup> xh: array<f16, {bm * xh * (2 if db else 1)}>;  // [token][unit's inputs]{" (x2: the staging in turn)" if db else ""}
var<workgroup> wh: array<f16, {bn * xh * (2 if db else 1)}>;  // [tile row][unit's inputs]
var<workgroup> cs: array<{shape.sums}, {sm * sn * 256}>;  // a tile of each slice, for the epilogue
var<private> split: u32;
@compute @workgroup_size({wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32{sg_param}) {{{tiles.first}
  let nt = {tiles.count};
  {first_block}
  let p0 = {spec.pair0}u + {bx} * {bn // 2}u;
  split = wid.z;
  let u0 = {"0u" if spec.experts else "wid.z"} * {per}u;
  let u1 = min(NU, u0 + {per}u);
  // the weight row a thread stages{" (a part of)" if parts > 1 else ""}: member (row & 1) of pair p0 + row / 2 (rows past N repeat the last){row_decl}
  let p = p0 + {wrow} / 2u;
  let r = min(select(row0(p), row1(p), ({wrow} & 1u) == 1u), N - 1u);
  var w: {wdecl};
  var xr: {xtype};
{fetch("u0")}
{ahead}
{acc_decl}
  for (var u = u0; u < u1; {step}) {{{db_offsets}
    {wif}{{
{w_store}
    }}
{x_store}
    workgroupBarrier();
{next_loads}
{products}
{"" if db else "    workgroupBarrier();" + chr(10)}  }}
{outs}{chr(10) + "  }" if loop else ""}
}}
""")
    name = (f"f16_matmul_{spec.epilogue}_{'+'.join(s.fmt for s in spec.segments)}_{sm}x{sn}x{tm}x{tn}"
            f"{'_tokens_first' if shape.tokens_first else ''}{'_double' if db else ''}{f'_k{ku}' if ku > 1 else ''}"
            f"{'_straight' if straight else ''}{f'_d{shape.depth}' if shape.depth > 1 else ''}{f'_w{parts}' if parts > 1 else ''}"
            f"{'_xh' if xf16 else ''}{'_a16' if shape.acc16 else ''}{'_bc' if shape.bitcast and not emulate else ''}"
            f"{'_loop' if loop else ''}{'_list' if listed else ''}{'_emulated' if emulate else ''}")
    k = sig.kernel(name, body)
    return Kernel(k.name, "enable f16;\n" + ("" if emulate else MATRIX_HEAD) + k.wgsl, k.bindings)


def _raw_parts_wgsl(spec: LinearSpec, n: int) -> str:
    """`fn raw_part(r, u, part) -> array<vec4<u32>, n>`: words part * n.. of row r's unit u of
    f16 weights (a unit is 4 words of 8 f16s), for rows staged by several threads."""
    out = []
    for i in range(len(spec.segments)):
        loads = "".join(f"  o[{j}] = w{i}[base + {j}u];\n" for j in range(n))
        out.append(f"fn unit_w{i}_part(r: u32, u: u32, part: u32) -> array<vec4<u32>, {n}> {{\n"
                   f"  var o: array<vec4<u32>, {n}>;\n  let base = r * {FORMATS['f16'].units(spec.k) * 4}u + u * 4u + part * {n}u;\n"
                   f"{loads}  return o;\n}}\n")
    out.append(by_segment(spec, "raw_part", ", u: u32, part: u32", f"array<vec4<u32>, {n}>", "unit_w{i}_part", "{r}, u, part"))
    return "\n".join(out)


def f16_matmul_grid(spec: LinearSpec, shape: TileShape = TileShape()):
    grid = mma_matmul_grid(spec, shape.bm, shape.bn)
    ex = spec.experts
    if not (ex and ex.loop):
        return grid

    def looped(n: int) -> tuple[int, int, int]:
        """The token blocks an expert gets on average, and one more (Experts.loop)."""
        x, y, z = grid(n)
        pairs = -(-n * ex.used // ex.count)
        return x, min(y, -(-pairs // shape.bm) + 1), z
    return looped
