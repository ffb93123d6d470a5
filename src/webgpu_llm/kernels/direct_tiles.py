"""A matmul of f16 weights for a few rows of x (a batched decode step's): the f16 tiles with the
weights' fragments loaded from the weight buffer itself, not staged in workgroup memory.

The staged f16 tiles (mma.f16_matmul_kernel) spend a load round trip and two barriers on every
32 inputs; with 32 rows of x each staged weight feeds only two fragments' products, so a
batched step's matmul follows its steps, not its bytes (~1.3 µs a step on an H100). Here each
subgroup requests its weight fragments straight from memory (a 16 x 16 fragment is 16 rows of
32 contiguous bytes), several steps ahead and with no barrier between them; only x, a few KB,
is staged, a chunk of up to `kc` inputs at a time (one barrier a chunk). `sk` subgroups may
share a workgroup's K range (their sums added at the end), so that a short matmul still has
many fragments in flight.

Weights: f16, each segment's rows a multiple of 16 (a fragment never straddles two buffers).
`emulate=True` computes the same fragments as f32 dot products of the same f16s (llvmpipe).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..runtime.program import Kernel
from .common import MAX_GROUPS, Signature
from .formats import FORMATS, UNIT
from .linear import LinearSpec, Segment, TokenRows, epilogue_wgsl, loaders_wgsl, rows_wgsl
from .mma import MATRIX_HEAD, _block_order

FRAG = 16  # a fragment's rows, columns and inputs


@dataclass(frozen=True)
class DirectShape:
    """A workgroup of `sn` x `sk` subgroups: each `tm` x `tn` fragments (16 tokens x 16 weight
    rows), side by side over the rows (`sn`) and taking every `sk`-th step of 16 inputs of
    the workgroup's K range; x staged `kc` inputs at most at a time; each subgroup requests
    the weight fragments of `ahead` steps before it multiplies the first of them."""

    tm: int = 2
    tn: int = 2
    sn: int = 4
    sk: int = 1
    kc: int = 256
    ahead: int = 4
    tokens_first: bool = False

    @property
    def bm(self) -> int:
        return FRAG * self.tm

    @property
    def bn(self) -> int:
        return FRAG * self.tn * self.sn

    @property
    def wg(self) -> int:
        return 32 * self.sn * self.sk

    def chunk(self, inputs: int) -> int:
        """Inputs staged a chunk for a K range of `inputs`: as even chunks of at most kc, each
        a whole number of the subgroups' steps, so that the last one wastes few loads."""
        step = FRAG * self.sk
        n = -(-inputs // self.kc)
        each = -(-inputs // n)
        return -(-each // step) * step

    def shared_bytes(self, inputs: int) -> int:
        """Workgroup memory: the staged x chunk (f16, rows padded by 8) and the sums of each
        K slice of subgroups (f32)."""
        return self.bm * (self.chunk(inputs) + 8) * 2 + self.sk * self.bm * self.bn * 4

    def fit(self, spec: LinearSpec, limit: int) -> DirectShape | None:
        """This shape with its x chunk halved until the workgroup memory it takes for `spec`
        is within `limit` bytes; None where even one step's chunk is past it."""
        shape, inputs, step = self, split_inputs(spec), FRAG * self.sk
        while shape.shared_bytes(inputs) > limit and shape.kc > step:
            shape = replace(shape, kc=max(step, shape.kc // 2 // step * step))
        return shape if shape.shared_bytes(inputs) <= limit else None

    @property
    def label(self) -> str:
        return f"direct {self.tm}x{self.tn}x{self.sn}x{self.sk} kc{self.kc} ahead{self.ahead}"

    def check(self) -> None:
        if min(self.tm, self.tn, self.sn, self.sk, self.ahead) < 1 or self.kc < FRAG or self.kc % FRAG:
            raise ValueError(f"direct tile shape {self}: positive counts, kc a multiple of {FRAG}")
        if self.wg > 1024:
            raise ValueError(f"direct tile shape {self}: {self.wg} threads a workgroup, at most 1024")


def split_inputs(spec: LinearSpec) -> int:
    """Inputs of K a workgroup takes: its K split's whole units."""
    return min(-(-(spec.kp // UNIT) // spec.splits) * UNIT, spec.kp)


def direct_ok(spec: LinearSpec, shape: DirectShape | None = None) -> str:
    """Why this matmul cannot take the direct tiles ("" where it can)."""
    if spec.prologue != "plain" or spec.last_row or spec.experts is not None:
        return "a plain matmul of token rows"
    if any(s.fmt != "f16" for s in spec.segments):
        return "f16 weights"
    if any(s.rows % FRAG for s in spec.segments) or (spec.split_pairs and (spec.rows // 2) % FRAG):
        return f"segments (and gated halves) of a multiple of {FRAG} rows"
    if spec.k % FRAG or (spec.x_f16 and spec.k % 8):
        return f"a multiple of {FRAG} inputs"
    if shape and spec.split_pairs and shape.bn // 2 % FRAG:
        return f"a workgroup of whole fragments of each half ({shape.bn} rows)"
    return ""


def _x_stage(spec: LinearSpec, shape: DirectShape, kc: int, tiles: TokenRows) -> tuple[str, str]:
    """WGSL of chunk c's x: its loads into registers `xr` (zeros past the token rows and the
    split's inputs; a row past the batch's reads its last, never past x's rows) and their
    stores to xh as f16s."""
    xw = 8 if spec.x_f16 else 4  # inputs a word
    words = shape.bm * kc // xw
    pt = -(-words // shape.wg)
    zero = "vec4<u32>(0u)" if spec.x_f16 else "vec4<f32>(0.0)"
    kw = spec.k // xw
    loads, stores = [], []
    for j in range(pt):
        e = f"lid + {j * shape.wg}u" if pt * shape.wg == words else f"min(lid + {j * shape.wg}u, {words - 1}u)"
        loads.append(f"""    {{ let e = {e}; let m = e / {kc // xw}u; let kx = c + (e % {kc // xw}u) * {xw}u;
      xr[{j}] = select({zero}, x[({tiles.x_row("min(m0 + m, max(nt, 1u) - 1u)")}) * {kw}u + min(kx, {spec.k - xw}u) / {xw}u],
                       m0 + m < nt && kx < k1); }}""")
        if spec.x_f16:
            put = " ".join(f"let h{i} = vec2<f16>(unpack2x16float(v.{c})); xh[o + {2 * i}u] = h{i}.x; xh[o + {2 * i + 1}u] = h{i}.y;"
                           for i, c in enumerate("xyzw"))
        else:
            put = "let h = vec4<f16>(clamp(v, -HMAX, HMAX)); xh[o] = h.x; xh[o + 1u] = h.y; xh[o + 2u] = h.z; xh[o + 3u] = h.w;"
        stores.append(f"    {{ let e = {e}; let v = xr[{j}]; let o = (e / {kc // xw}u) * XH + (e % {kc // xw}u) * {xw}u; {put} }}")
    decl = f"  var xr: array<vec4<{'u32' if spec.x_f16 else 'f32'}>, {pt}>;\n"
    return decl + "\n".join(loads), "\n".join(stores)


def direct_matmul_kernel(spec: LinearSpec, shape: DirectShape = DirectShape(), emulate: bool = False) -> Kernel:
    """st.n tokens (rows of x) times f16 weights: grid = direct_matmul_grid(spec, shape)(n).
    Same bindings and epilogues as mma.f16_matmul_kernel (K split over grid z included), the
    weights bound as f16s."""
    shape.check()
    if (why := direct_ok(spec, shape)):
        raise ValueError(f"the direct f16 tiles need {why}")
    assert (spec.splits > 1) == (spec.epilogue == "partial")
    tm, tn, sn, sk, bm, bn, wg = shape.tm, shape.tn, shape.sn, shape.sk, shape.bm, shape.bn, shape.wg
    sig = Signature().state()
    sig.storage("x", "array<vec4<u32>>" if spec.x_f16 else "array<vec4<f32>>")
    for i in range(len(spec.segments)):
        sig.storage(f"w{i}", "array<f16>")
    kp = FORMATS["f16"].padded_k(spec.k)  # f16s a weight row takes
    per = split_inputs(spec)
    kc = shape.chunk(per)
    steps = kc // (FRAG * sk)  # a subgroup's steps a chunk
    ahead = min(shape.ahead, steps)
    body = "\n".join([rows_wgsl(spec), epilogue_wgsl(spec, sig)])
    tiles = TokenRows.of(spec, sig)
    body += tiles.decls

    # the segment and first element of each of the subgroup's weight fragments: the tile rows
    # 16 (tn sr + j).. of the workgroup's are weight rows vr.. (adjacent pairs: 2 p0 + c; gated
    # halves: p0 + c in the first half of the tile, rows/2 + p0 + c - bn/2 in the second),
    # clamped into their segment (a fragment past the rows is multiplied and dropped)
    half = spec.rows // 2
    if spec.split_pairs:
        vr = f"select({half}u + p0 + {{c}} - {bn // 2}u, p0 + {{c}}, {{c}} < {bn // 2}u)"
    else:
        vr = "2u * p0 + {c}"
    seg_of, start = [], 0
    for i, s in enumerate(spec.segments):
        seg_of.append(f"  if (v < {start + s.rows}u) {{ return vec2<u32>({i}u, min(v - {start}u, {s.rows - FRAG}u) * KP); }}")
        start += s.rows
    body += "fn frag_at(v0: u32) -> vec2<u32> {\n  let v = min(v0, N - 1u);\n" + "\n".join(seg_of) + "\n  return vec2<u32>(0u);\n}\n"
    nseg = len(spec.segments)
    if emulate:
        reads = "\n".join(f"  if (seg == {i}u) {{ return w{i}[i]; }}" for i in range(nseg - 1))
        body += f"fn wval(seg: u32, i: u32) -> f16 {{\n{reads}\n  return w{nseg - 1}[i];\n}}\n"
    else:
        loads = "\n".join(f"  if (seg == {i}u) {{ return subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&w{i}, off, true, KP); }}"
                          for i in range(nseg - 1))
        body += (f"fn wfrag(seg: u32, off: u32) -> subgroup_matrix_right<f16, 16, 16> {{\n{loads}\n"
                 f"  return subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>>(&w{nseg - 1}, off, true, KP);\n}}\n")
    frags = "\n".join(f"  let c{j} = {FRAG}u * ({tn}u * sr + {j}u);\n  let f{j} = frag_at({vr.format(c=f'c{j}')});"
                      for j in range(tn))

    def kk(s: int) -> str:  # step s's first input of the chunk, this subgroup's
        return f"c + {FRAG}u * (ks + {sk * s}u)"

    def wk(s: int) -> str:  # ... and of the weights' row (clamped: x is zero past the split)
        return f"min({kk(s)}, KP - {FRAG}u)"

    if emulate:
        acc_decl = f"  var acc = array<f32, {tm * tn * 8}>();"
        request = [""] * steps

        def multiply(s: int) -> str:
            return f"""    for (var e = lane; e < {tm * tn * 256}u; e += 32u) {{
      let n = e / 256u;
      let j = n % {tn}u;
      let xa = ({FRAG}u * (n / {tn}u) + (e % 256u) / 16u) * XH + {kk(s)} - c;
      var fj = f0;
{chr(10).join(f"      if (j == {j}u) {{ fj = f{j}; }}" for j in range(1, tn))}
      let wa = fj.y + (e % 16u) * KP + {wk(s)};
      var d = 0.0;
      for (var k = z; k < {FRAG}u; k++) {{ d += f32(xh[xa + k]) * f32(wval(fj.x, wa + k)); }}
      acc[e / 32u] += d;
    }}"""
        store = "\n".join(f"""  for (var v = 0u; v < 8u; v++) {{
    let e = lane + 32u * v + {256 * (a * tn + j)}u;
    cs[SUM + ({FRAG * a}u + (e % 256u) / 16u) * {bn}u + c{j} + e % 16u] = acc[e / 32u];
  }}""" for a in range(tm) for j in range(tn))
    else:
        acc_decl = "\n".join(f"  var acc{a}{j} = subgroup_matrix_result<f32, 16, 16>();" for a in range(tm) for j in range(tn))
        request = ["\n".join(f"    let b{s}_{j} = wfrag(f{j}.x, f{j}.y + {wk(s)});" for j in range(tn)) for s in range(steps)]

        def multiply(s: int) -> str:
            lines = [f"    let a{s}_{a} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>>(&xh, {FRAG * a}u * XH + {kk(s)} - c, false, XH);"
                     for a in range(tm)]
            lines += [f"    acc{a}{j} = subgroupMatrixMultiplyAccumulate(a{s}_{a}, b{s}_{j}, acc{a}{j});" for a in range(tm) for j in range(tn)]
            return "\n".join(lines)
        store = "\n".join(f"  subgroupMatrixStore(&cs, SUM + {FRAG * a}u * {bn}u + c{j}, acc{a}{j}, false, {bn}u);"
                          for a in range(tm) for j in range(tn))
    # a chunk: x's loads and the first steps' weight fragments requested, the barrier after the
    # chunk before (whose products read xh), x stored, a barrier, then each step multiplied
    # while the fragments `ahead` steps on are requested
    x_loads, x_stores = _x_stage(spec, shape, kc, tiles)
    chunk = [x_loads, *request[:ahead], "    workgroupBarrier();", x_stores, "    workgroupBarrier();"]
    for s in range(steps):
        if s + ahead < steps:
            chunk.append(request[s + ahead])
        chunk.append(multiply(s))
    col0, col1 = ("q", f"{bn // 2}u + q") if spec.split_pairs else ("2u * q", "2u * q + 1u")
    sums = " + ".join(f"cs[{i * bm * bn}u + tt * {bn}u + {{c}}]" for i in range(sk))
    sg_param = "" if emulate else ", @builtin(subgroup_id) sgid: u32"
    bx, by, order_param = _block_order(shape.tokens_first)
    body += f"""
const KP: u32 = {kp}u;
const XH: u32 = {kc + 8}u;
const HMAX = vec4<f32>(65504.0);
var<workgroup> xh: array<f16, {bm * (kc + 8)}>;  // [token][the chunk's inputs]
var<workgroup> cs: array<f32, {sk * bm * bn}>;  // [K slice][token][tile row]: the sums
var<private> split: u32;
@compute @workgroup_size({wg})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32{sg_param}{order_param}) {{{tiles.first}
  let nt = {tiles.count};
  {tiles.start(by, bm)}
  let p0 = {spec.pair0}u + {bx} * {bn // 2}u;
  split = wid.z;
  let k0 = wid.z * {per}u;
  let k1 = min({spec.k}u, k0 + {per}u);
  let s = {"lid / 32u" if emulate else "sgid"};
  let lane = lid % 32u;
  let z = lid / {wg}u;  // 0
  let sr = s % {sn}u;  // the subgroup's rows
  let ks = s / {sn}u;  // ... and its steps: ks, ks + {sk}, ..
  let SUM = ks * {bm * bn}u;
{frags}
{acc_decl}
  for (var c = k0; c < k1; c += {kc}u) {{
{chr(10).join(chunk)}
  }}
{store}
  workgroupBarrier();
  for (var e = lid; e < {bm * bn // 2}u; e += {wg}u) {{
    let tt = e / {bn // 2}u;
    let q = e % {bn // 2}u;
    let t = m0 + tt;
    if (t < nt && p0 + q < NP) {{ epi({tiles.out}t, p0 + q, {sums.format(c=col0)}, {sums.format(c=col1)}); }}
  }}
}}
"""
    name = (f"f16_direct_{spec.epilogue}_{tm}x{tn}x{sn}x{sk}_kc{kc}_a{ahead}{'_xh' if spec.x_f16 else ''}"
            f"{'_tokens_first' if shape.tokens_first else ''}{'_emulated' if emulate else ''}")
    k = sig.kernel(name, body)
    return Kernel(k.name, "enable f16;\n" + ("" if emulate else MATRIX_HEAD) + k.wgsl, k.bindings)


def direct_matmul_grid(spec: LinearSpec, shape: DirectShape = DirectShape()):
    """Of the token count n: (row blocks, token blocks, K splits)."""
    gx = -(-spec.part_pairs // (shape.bn // 2))
    return lambda n: (gx, -(-n // shape.bm), spec.splits)


def f16_copy_kernel(fmt: str, rows: int, k: int, first: int = 0, count: int = 0) -> Kernel:
    """Rows first.. (`count` of them; 0: to the last) of weights `w0` of `fmt` (`rows` rows of
    k values) as f16 weights `y` (FORMATS["f16"]'s layout, clamped to f16's range): a
    quantized matrix's copy for the direct tiles. One thread a unit of 32 values; grid =
    f16_copy_grid(count, k)."""
    count = count or rows - first
    spec = LinearSpec(k=k, segments=(Segment(fmt, rows),))
    sig = Signature()
    body = loaders_wgsl(spec, sig)
    sig.storage("y", "array<vec4<u32>>", write=True)
    nu = FORMATS["f16"].units(k)
    body += f"""
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
  let i = gid.y * nwg.x * 64u + gid.x;
  if (i >= {count * nu}u) {{ return; }}
  let u = i % {nu}u;
  let v = load_row({first}u + i / {nu}u, u);
  for (var j = 0u; j < 4u; j++) {{
    let a = clamp(v[2u * j], vec4<f32>(-65504.0), vec4<f32>(65504.0));
    let b = clamp(v[2u * j + 1u], vec4<f32>(-65504.0), vec4<f32>(65504.0));
    y[i * 4u + j] = vec4<u32>(pack2x16float(a.xy), pack2x16float(a.zw), pack2x16float(b.xy), pack2x16float(b.zw));
  }}
}}
"""
    return sig.kernel(f"f16_copy_{fmt}", body)


def f16_copy_grid(rows: int, k: int) -> tuple[int, int, int]:
    groups = -(-rows * FORMATS["f16"].units(k) // 64)
    return min(groups, MAX_GROUPS), -(-groups // MAX_GROUPS), 1
