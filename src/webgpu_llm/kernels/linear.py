"""Linear layers: a mat-vec for decode and a tiled matmul for prompts, with fused ends.

Both kernels compute y = W x over a *virtual* weight matrix that is the concatenation of one or
more segments (Q, K and V; gate and up; a vocabulary split to respect the binding limit), each
in its own format. Outputs are produced in *pairs of rows*, which is what the fused epilogues
need: RoPE rotates adjacent pairs (Q/K rows are permuted at load so that RoPE partners sit side
by side) and SiLU·mul pairs row p of `gate` with row p of `up`.

Prologues (how x is read):  plain | rmsnorm (fused RMSNorm) | attn (fused split-K combine)
Epilogues (what is done with y):  store | add (residual) | silu_mul | gelu | gelu_mul (GeGLU,
tanh-GELU) | swiglu_oai (gpt-oss's clamped SwiGLU) | qkv (bias, RoPE, KV append)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..runtime.program import Kernel
from .common import Signature, Slots, f16_clamped, grid_2d, kv_rows_wgsl
from .formats import FORMATS, INT8_FORMATS, SPREAD_FORMATS, UNIT, WGSL_HELPERS, unroll
from .moe import Router, route_wgsl, tile_list_at, tile_list_len
from .wgsl_math import helpers_for

if TYPE_CHECKING:
    from ..runtime.gpu import Gpu


@dataclass(frozen=True)
class Segment:
    fmt: str
    rows: int


@dataclass(frozen=True)
class QkvShape:
    """Where the rows of a fused QKV projection go."""

    q_rows: int  # n_heads * head_dim
    kv_rows: int  # n_kv_heads * head_dim
    head_dim: int
    ctx: int  # KV cache length
    # LongRoPE: the rotated pairs' outputs times this; `rope_pairs` rotated pairs a head (0: all)
    rope_scale: float = 1.0
    rope_pairs: int = 0
    kv_f16: bool = False  # the cache holds f16 pairs packed in u32s (half the bytes of f32s)


@dataclass(frozen=True)
class AttnShape:
    """Layout of split-K attention partials, for the `attn` prologue."""

    n_heads: int
    head_dim: int
    chunk: int  # keys per split
    max_splits: int
    window: int = 0  # sliding window: the splits before the window's first key hold nothing
    sinks: int = -1  # per-head sink logits at this float offset of `pv` (AttentionSpec.sinks)
    unroll: int = 1  # splits whose partials one pass of the merge loads at once (combine_wgsl)
    # max_splits caps the splits (AttentionSpec.cap): each split then spans several chunks
    # once the keys outnumber max_splits chunks (split_span_wgsl)
    capped: bool = False
    # the merge in one pass over the splits (a running max), one round trip of loads a pass
    # where it took two (the maxima, then the sums); the mat-vec's staged merge (`attn`
    # prologue) so for all of a thread's words at once, where it took them one after another
    at_once: bool = False

    def span(self, pos: str) -> str:
        """WGSL of the keys a split spans at position `pos` (split_span_wgsl)."""
        return split_span_wgsl(self.chunk, self.max_splits if self.capped else 0, pos)


def split_span_wgsl(chunk: int, cap: int, pos: str) -> str:
    """WGSL of the keys each split-K decode split takes at position `pos`: `chunk`, or with
    `cap` splits at most, the fewest whole chunks that cover keys 0..pos in `cap` splits, so
    that a long context's grid and its merge stay `cap` splits (0: no cap)."""
    if not cap:
        return f"{chunk}u"
    return f"((({pos} + {chunk}u) / {chunk}u + {cap - 1}u) / {cap}u * {chunk}u)"


@dataclass(frozen=True)
class Experts:
    """A mixture-of-experts layer's matrices: each segment's binding holds `count` experts'
    matrices one after the other, and the kernel multiplies with the experts the router chose
    (kernels/moe.py): table `route` holds, per (token, slot), the expert id and its gate
    weight (f32 bits).

    Mat-vec (one token): grid z is the slot j; x is row j where `x_per_slot` (the down
    projection: slot j's activation), else row 0; the output goes to row j.
    Matmul (a prompt): grid z is the expert e; its rows are the (token, slot) pairs routed to
    it, listed grouped by expert in `groups` (moe.group_kernel); x is row i of the list where
    `x_per_slot`, else the pair's token; the output goes to row i of the list."""

    count: int
    used: int
    x_per_slot: bool = False
    rows: int = 0  # matmul: most (token, slot) pairs of a prompt chunk (sizes `groups`)
    # mat-vec: choose the experts here from the router's logits `rl` (moe.route_wgsl) instead
    # of reading `route`, which the first workgroup writes for the kernels after it
    router: Router | None = None
    # mat-vec (down, x_per_slot, epilogue "add"): a workgroup's row groups take its row pairs
    # of every chosen expert side by side (group i: slot i % used, pair i / used), and their
    # gate-weighted sums (bias included) are added into y, the hidden state, through workgroup
    # memory: no combine kernel and no per-slot outputs; grid z is 1
    combine: bool = False
    # matmul on the f16 tiles: a grid of only the token blocks an expert gets on average and one
    # more, each workgroup taking its expert's further blocks in turn (mma.f16_matmul_grid),
    # where a grid of every token's block for each expert left most of its workgroups empty
    loop: bool = False
    # matmul: workgroup y takes entry y of the list of (expert, block of this many pairs) that
    # moe.group_kernel writes after the groups (moe.tile_list_len entries, those past the
    # step's tiles marked empty): a grid of the tiles there are, none empty, none looping;
    # grid z is 1 (0: grid z is the expert, y its blocks)
    tiles: int = 0

    def grid_yz(self, n: int, bm: int) -> tuple[int, int]:
        """Grid y and z of a matmul of n tokens in blocks of bm: the expert's blocks and the
        experts, or the tile list's entries (`tiles`) for these n tokens."""
        if self.tiles:
            assert self.tiles == bm, (self.tiles, bm)
            return tile_list_len(n * self.used, self.count, bm), 1
        return -(-n // bm), self.count


# gated epilogues: row p of the gate and row p of the up projection make output p
GATED = ("silu_mul", "gelu_mul", "swiglu_oai")
SWIGLU_ALPHA, SWIGLU_LIMIT = 1.702, 7.0  # gpt-oss's


@dataclass(frozen=True)
class LinearSpec:
    k: int
    segments: tuple[Segment, ...]
    epilogue: str = "store"  # store | add | silu_mul | gelu | gelu_mul | swiglu_oai | qkv | partial (matmul with splits)
    prologue: str = "plain"  # plain | rmsnorm | attn | post (mat-vec)
    bias: bool = False
    eps: float = 1e-6
    last_row: bool = False  # read x row st.n-1 instead of row 0 (prompt -> first token)
    qkv: QkvShape | None = None
    attn: AttnShape | None = None
    # Small per-layer parameters (norm weight, bias, RoPE frequencies) live in one f32 buffer
    # `pv` at these offsets (in floats, multiples of 4): one binding instead of three.
    nw_off: int = 0
    bias_off: int = 0
    rope_off: int = 0
    # matmul only: handle tokens t0 .. t0+tmax of the batch (0 = all), output rows from 0
    t0: int = 0
    tmax: int = 0
    # matmul only: split K over this many workgroups (grid z); epilogue "partial" writes each
    # split's sums to y[(t * splits + s) * rows + row] for a row kernel to add up
    splits: int = 1
    # epilogue "add": y = res + W x with res its own binding (a persistent kernel's hand-off,
    # kernels/persistent.py), instead of y += W x
    residual: bool = False
    # epilogue "qkv" of a batched step: token t's position and KV-cache slot come from the
    # table `rows` (common.Slots), not from st.pos + t in the one cache
    slots: Slots | None = None
    experts: Experts | None = None
    # epilogue "store": y = cap * tanh(y / cap) (final-logit soft-capping); 0: none
    softcap: float = 0.0
    # prologue "post": the post-norm weight of the stored output row `part`, at this float
    # offset of the binding `ppv` (the parameters of the layer it belongs to)
    post_off: int = 0
    # f16-tile matmul only (mma.f16_matmul_kernel): x rows hold k f16s (k a multiple of 8), as
    # the kernel before wrote them for the tiles: half the bytes staged and held in registers
    x_f16: bool = False
    # ... and a gated epilogue's outputs stored as f16s (clamped to f16's range), for the next
    # f16-tile matmul to read them (x_f16)
    y_f16: bool = False
    # f16-tile matmul and epilogue_kernel only: the output pairs pair0 .. pair0 + npairs this
    # dispatch writes (npairs 0: to the last), where a matmul's last row blocks run in a
    # dispatch of their own (engine/waves.py's tail, split over K)
    pair0: int = 0
    npairs: int = 0
    # epilogue "partial" of a gated matmul: pair p's rows p and rows / 2 + p, as the gated
    # epilogue that sums them pairs them, so that a range of its pairs is a range of these
    gated_pairs: bool = False

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)

    @property
    def split_pairs(self) -> bool:
        return self.epilogue in GATED or self.gated_pairs

    @property
    def part_pairs(self) -> int:
        """The output pairs this dispatch writes (LinearSpec.pair0, npairs)."""
        n = self.npairs or self.pairs - self.pair0
        if n < 1 or self.pair0 + n > self.pairs:
            raise ValueError(f"pairs {self.pair0} + {n} of a matrix of {self.pairs} pairs")
        return n

    @property
    def pairs(self) -> int:
        return self.rows // 2 if self.split_pairs else (self.rows + 1) // 2

    @property
    def out_features(self) -> int:
        return self.rows // 2 if self.split_pairs else self.rows

    @property
    def kp(self) -> int:
        return -(-self.k // UNIT) * UNIT


def declare_pv(sig: Signature) -> None:
    """Declare the per-layer parameter buffer once (several parts of a kernel read it)."""
    if "pv" not in sig.names:
        sig.storage("pv", "array<vec4<f32>>")


PV_HELPER = "fn pvf(i: u32) -> f32 { return pv[i >> 2u][i & 3u]; }\n"


def rows_wgsl(spec: LinearSpec) -> str:
    """`row0(p)`, `row1(p)`: the rows of output pair p (adjacent, or p and p + rows/2 for
    split pairs); N rows, NP pairs."""
    n, half = spec.rows, spec.rows // 2
    if spec.split_pairs:
        r = f"fn row0(p: u32) -> u32 {{ return p; }}\nfn row1(p: u32) -> u32 {{ return {half}u + p; }}\n"
    else:
        r = "fn row0(p: u32) -> u32 { return 2u * p; }\nfn row1(p: u32) -> u32 { return 2u * p + 1u; }\n"
    return r + f"const N: u32 = {n}u;\nconst NP: u32 = {spec.pairs}u;\n"


def loaders_wgsl(spec: LinearSpec, sig: Signature, int8: bool = False, spread: bool = False,
                  early: bool = False, half: bool = False) -> str:
    """Per-segment unit functions and one function over the whole virtual matrix that picks
    the segment of row r: `load_row(r, u) -> array<vec4<f32>, 8>` (the unit's weights;
    `vec4<f16>`s with `half`, f16 weights only), or with `int8`, `dot_row(r, u, x0, x1, xd) -> f32`
    (the unit times an int8 activation unit). `early` (float weights, or quantized ones of one
    format with split loads: Format.split_words) adds the two steps of `load_row`:
    `raw_row(r, u)` (the unit's 16-byte words) and `dec_row(r, words)` (their values); with
    `int8` (Format.has_i8_split) those of `dot_row`: `raw_row` and `dotw_row(r, words, x0, x1, xd)`."""
    vt = f"array<vec4<{'f16' if half else 'f32'}>, 8>"
    if int8:
        head, ret, args, call = "dot", "f32", ", x0: vec4<u32>, x1: vec4<u32>, xd: vec2<f32>", ", x0, x1, xd"
    else:
        head, ret, args, call = "unit", vt, "", ""
    out = [WGSL_HELPERS]
    count = spec.experts.count if spec.experts else 1
    if spec.experts:  # the expert whose rows this thread reads (set by the kernel's main)
        out.append("var<private> ex: u32;")
    for i, seg in enumerate(spec.segments):
        fmt = FORMATS[seg.fmt]
        sig.storage(f"w{i}", "array<vec4<u32>>")
        if int8:
            out.append(fmt.wgsl_unit_i8(f"{head}_w{i}", f"w{i}", seg.rows * count, spec.k))
        else:
            out.append(fmt.wgsl_unit(f"{head}_w{i}", f"w{i}", seg.rows * count, spec.k, spread, half))
    name = "dot_row" if int8 else "load_row"
    out.append(by_segment(spec, name, f", u: u32{args}", ret, head + "_w{i}", "{r}, u" + call))
    if early:
        words = {FORMATS[s.fmt].split_words() for s in spec.segments}
        assert len(words) == 1 and 0 not in words, spec.segments
        assert not int8 or all(FORMATS[s.fmt].has_i8_split() for s in spec.segments), spec.segments
        wt = f"array<vec4<u32>, {words.pop()}>"
        for i, seg in enumerate(spec.segments):
            fmt = FORMATS[seg.fmt]
            if int8:
                out.append(fmt.wgsl_unit_i8_split(f"{head}_w{i}", f"w{i}", seg.rows * count, spec.k))
            elif fmt.quantized:  # (float formats define their raw and dec functions with their unit's)
                out.append(fmt.wgsl_unit_split(f"{head}_w{i}", f"w{i}", seg.rows * count, spec.k))
        out.append(by_segment(spec, "raw_row", ", u: u32", wt, head + "_w{i}_raw", "{r}, u"))
        if int8:
            out.append(by_segment(spec, "dotw_row", f", w: {wt}{args}", "f32", head + "_w{i}_dotw", "w" + call))
        else:
            out.append(by_segment(spec, "dec_row", f", w: {wt}", vt, head + "_w{i}_dec", "w"))
    return "\n".join(out)


def by_segment(spec: LinearSpec, name: str, params: str, ret: str, callee: str, args: str) -> str:
    """`fn name(r, ...) -> ret`: `callee` of the segment that holds row r of the virtual
    matrix (`{i}`: the segment), with `args` (`{r}`: the row within the segment)."""
    lines, start = [], 0
    for i, seg in enumerate(spec.segments):
        row = f"ex * {seg.rows}u + r - {start}u" if spec.experts else f"r - {start}u"
        call = f"return {callee.format(i=i)}({args.format(r=row)});"
        # the last one unconditional (r is always < N where these are called)
        lines.append(f"  {call}" if i == len(spec.segments) - 1 else f"  if (r < {start + seg.rows}u) {{ {call} }}")
        start += seg.rows
    return f"fn {name}(r: u32{params}) -> {ret} {{\n" + "\n".join(lines) + "\n}\n"


# 32 values of x (one unit) as int8s, four to a word, with (scale, scale * sum of the int8s):
# scale = max |x| / 127 (the int8 mat-vec and the subgroup-matrix matmul, kernels/mma.py)
QUANT_UNIT = """
struct QX { w: array<u32, 8>, d: vec2<f32> }
fn quant_unit(v: array<vec4<f32>, 8>) -> QX {
  var mx = vec4<f32>(0.0);
%8  mx = max(mx, abs(v[$i]));
  let d = max(max(mx.x, mx.y), max(mx.z, mx.w)) / 127.0;
  let inv = select(0.0, 1.0 / d, d > 0.0);
  var o: QX;
  var sum = vec4<i32>(0);
%8  let qi = vec4<i32>(round(v[$i] * inv)); o.w[$i] = pack4xI8(qi); sum += qi;
  o.d = vec2<f32>(d, d * f32(sum.x + sum.y + sum.z + sum.w));
  return o;
}
"""

QUANTIZE_X = QUANT_UNIT + """
// int8 activations: each 32-value unit of x (staged, or read from memory) as int8s (four to a word) and its
// (scale, scale * sum of the int8s); XS rows of x one after the other (the combined experts' slots), else row xb
var<workgroup> xq: array<vec4<u32>, 2u * NU * XS>;
var<workgroup> xd: array<vec2<f32>, NU * XS>;
fn quantize_x(lid: u32, xb: u32) {
  for (var u = lid; u < NU * XS; u += WG) {
    var v: array<vec4<f32>, 8>;
    let rb = select(xb, u / NU * K4, XS > 1u);
%8  v[$i] = X(rb, u % NU * 8u + $i);
    let qu = quant_unit(v);  // (not `q`: a fused QKV kernel's binding, which a persistent layer renames)
    xq[2u * u] = vec4<u32>(qu.w[0], qu.w[1], qu.w[2], qu.w[3]);
    xq[2u * u + 1u] = vec4<u32>(qu.w[4], qu.w[5], qu.w[6], qu.w[7]);
    xd[u] = qu.d;
  }
  workgroupBarrier();
}
"""


# Word i (of WPU) of unit u when units are spread: units come in blocks of TPR (the last block
# may be shorter, c units); word i of the block's l-th unit is the block's word i * c + l, so
# the TPR threads of a row group read TPR adjacent words with each load.
SPREAD_POS = """fn upos(u: u32, i: u32) -> u32 {
  let b = u / TPR;
  let c = min(TPR, NU - b * TPR);
  return b * WPU * TPR + i * c + (u - b * TPR);
}"""


def _bias_pair(off: str) -> tuple[str, str]:
    """WGSL of row pair p's biases, at float offset `off` of `pv` (the second clamped to the
    last row: the caller drops it past N)."""
    return f"pvf({off} + row0(p))", f"pvf({off} + min(row1(p), N - 1u))"


def epilogue_wgsl(spec: LinearSpec, sig: Signature) -> str:
    """`fn epi(t, p, v0, v1)`: token t of the batch, row pair p."""
    n = spec.rows
    bias = ""
    if spec.bias and not (spec.experts and spec.experts.combine):  # (combined: added per expert)
        declare_pv(sig)
        b0, b1 = _bias_pair(f"{spec.bias_off}u + ex * N" if spec.experts else f"{spec.bias_off}u")  # experts: each its own
        bias = f"  let b0 = v0 + {b0};\n  let b1 = select(0.0, v1 + {b1}, row1(p) < N);\n"
    else:
        bias = "  let b0 = v0;\n  let b1 = v1;\n"
    e = spec.epilogue
    if spec.y_f16 and e not in GATED:
        raise ValueError(f"f16 outputs are for the gated epilogues, not {e!r}")
    # a gated epilogue's outputs: f32s, or f16s (clamped to their range) for an f16-tile reader
    gated_y = "array<f16>" if spec.y_f16 else "array<f32>"

    def gated_out(v: str) -> str:
        return f"f16({f16_clamped(v)})" if spec.y_f16 else v

    if e == "store":
        sig.storage("y", "array<f32>", write=True)
        o0, o1 = ("b0", "b1") if not spec.softcap else (softcap_wgsl("b0", spec.softcap), softcap_wgsl("b1", spec.softcap))
        body = f"  y[t * {n}u + row0(p)] = {o0};\n  if (row1(p) < N) {{ y[t * {n}u + row1(p)] = {o1}; }}\n"
    elif e == "add":
        sig.storage("y", "array<f32>", write=True)
        r = "y"
        if spec.residual:  # y = res + W x: the sum lands in a region nothing has read yet
            sig.storage("res", "array<f32>")
            r = "res"
        body = (f"  let i0 = t * {n}u + row0(p);\n  y[i0] = {r}[i0] + b0;\n"
                f"  if (row1(p) < N) {{ let i1 = t * {n}u + row1(p); y[i1] = {r}[i1] + b1; }}\n")
    elif e == "partial":
        sig.storage("y", "array<f32>", write=True)
        body = (f"  let i0 = (t * {spec.splits}u + split) * {n}u + row0(p);\n  y[i0] = b0;\n"
                f"  if (row1(p) < N) {{ y[i0 - row0(p) + row1(p)] = b1; }}\n")
    elif e == "silu_mul":
        sig.storage("y", gated_y, write=True)
        body = f"  y[t * {n // 2}u + p] = {gated_out('b0 / (1.0 + exp(-b0)) * b1')};\n"
    elif e == "gelu":  # BERT's exact GELU, x * Phi(x) with erf (not the tanh approximation)
        sig.storage("y", "array<f32>", write=True)
        g = "0.5 * {v} * (1.0 + m_erf({v} * 0.70710678118654752))"
        body = (f"  y[t * {n}u + row0(p)] = {g.format(v='b0')};\n"
                f"  if (row1(p) < N) {{ y[t * {n}u + row1(p)] = {g.format(v='b1')}; }}\n")
    elif e == "swiglu_oai":  # gpt-oss: clamped gate and up, (up + 1) * gate * sigmoid(alpha * gate)
        sig.storage("y", gated_y, write=True)
        body = (f"  let g = min(b0, {SWIGLU_LIMIT!r});\n  let u = clamp(b1, {-SWIGLU_LIMIT!r}, {SWIGLU_LIMIT!r});\n"
                f"  y[t * {n // 2}u + p] = {gated_out(f'(u + 1.0) * g / (1.0 + exp(-{SWIGLU_ALPHA!r} * g))')};\n")
    elif e == "gelu_mul":  # tanh-GELU(gate) * up, as transformers' gelu_pytorch_tanh
        sig.storage("y", gated_y, write=True)
        body = f"  y[t * {n // 2}u + p] = {gated_out(gelu_tanh_wgsl('b0') + ' * b1')};\n"
    elif e == "qkv":
        q = spec.qkv
        assert q is not None
        sig.storage("q", "array<f32>", write=True)
        # K cache then V cache of this layer: f32s, or (kv_f16) f16 pairs packed in u32s
        sig.storage("kv", "array<u32>" if q.kv_f16 else "array<f32>", write=True)
        declare_pv(sig)
        d = q.head_dim
        kv_rows = kv_rows_wgsl(sig, q.kv_rows // d, q.ctx, spec.slots)

        def kv_pair(i: str, a: str, b: str, ind: str) -> str:
            """Stores cache values i and i + 1 (i even: pairs are adjacent rows)."""
            if q.kv_f16:
                return f"{ind}kv[({i}) / 2u] = pack2x16float(vec2<f32>({a}, {b}));"
            return f"{ind}kv[{i}] = {a};\n{ind}kv[{i} + 1u] = {b};"
        where = "  let pos = st.pos + t;\n  let slot = 0u;\n"
        if spec.slots:  # the row's sequence: its position and slot
            sig.storage("rows", "array<vec2<u32>>")
            where = "  let pos = rows[t].x;\n  let slot = rows[t].y;\n"
        body = f"""  let r = row0(p);
{where}  if (r < {q.q_rows + q.kv_rows}u) {{
    // Q or K: rotate the adjacent pair (rows are permuted at load so partners are adjacent)
    let ang = f32(pos) * pvf({spec.rope_off}u + (r % {d}u) / 2u);
{rope_cs(q)}
    let o0 = b0 * c - b1 * s;
    let o1 = b0 * s + b1 * c;
    if (r < {q.q_rows}u) {{
      q[t * {q.q_rows}u + r] = o0;
      q[t * {q.q_rows}u + r + 1u] = o1;
    }} else {{
      let kr = r - {q.q_rows}u;
      let i = kv_row(slot, kr / {d}u, pos) * {d}u + kr % {d}u;
{kv_pair("i", "o0", "o1", "      ")}
    }}
  }} else {{
    let vr = r - {q.q_rows + q.kv_rows}u;
    let i = (kv_row(slot, vr / {d}u, pos) + V_ROWS) * {d}u + vr % {d}u;
{kv_pair("i", "b0", "b1", "    ")}
  }}
"""
    else:
        raise ValueError(f"unknown epilogue {e!r}")
    helper = (PV_HELPER if "pvf(" in bias + body else "") + helpers_for(body)
    if e == "qkv":
        helper += kv_rows
    return helper + f"fn epi(t: u32, p: u32, v0: f32, v1: f32) {{\n{bias}{body}}}\n"


def softcap_wgsl(x: str, cap: float) -> str:
    """cap * tanh(x / cap) (tanh's argument clamped: some backends' tanh overflows to NaN)."""
    return f"(tanh(clamp({x} / {cap!r}, -15.0, 15.0)) * {cap!r})"


def gelu_tanh_wgsl(x: str) -> str:
    """GELU's tanh approximation of x (a plain name), its tanh argument clamped likewise."""
    return f"(0.5 * {x} * (1.0 + tanh(clamp(0.7978845608028654 * ({x} + 0.044715 * {x} * {x} * {x}), -15.0, 15.0))))"


def rope_cs(q: QkvShape) -> str:
    """`c` and `s` of the rotation by `ang` of row r (LongRoPE scales the rotated pairs only)."""
    if q.rope_scale == 1.0:
        return "    let c = cos(ang);\n    let s = sin(ang);"
    a = f"{q.rope_scale!r}"
    if q.rope_pairs:
        a = f"select(1.0, {a}, (r % {q.head_dim}u) / 2u < {q.rope_pairs}u)"
    return f"    let rs = {a};\n    let c = cos(ang) * rs;\n    let s = sin(ang) * rs;"


def _sink(a: AttnShape, h: str) -> str:
    """WGSL of head h's sink logit (AttnShape.sinks) in `pv` (pvf may not be declared)."""
    return f"pv[({a.sinks}u + {h}) >> 2u][({a.sinks}u + {h}) & 3u]"


def _merge_start(a: AttnShape, tag: str, sink: str) -> str:
    """WGSL declaring a running merge's state (max, total weight, weighted values) `mx{tag}`,
    `z{tag}`, `o{tag}`: empty, or holding the head's sink logit `sink` (AttnShape.sinks)."""
    mx, z = (sink, "1.0") if a.sinks >= 0 else ("-3.0e38", "0.0")
    return f"  var mx{tag} = {mx};\n  var z{tag} = {z};\n  var o{tag} = vec4<f32>(0.0);"


def _merge_one(tag: str, p: str, acc: str, ok: str) -> str:
    """WGSL adding split partial (max, sum) `p` and weighted values `acc` to running merge
    `tag` where `ok` (the split holds keys): rescaled to the new max."""
    return (f"    {{ let ok = {ok}; let mn = select(mx{tag}, max(mx{tag}, {p}.x), ok); let c = exp(mx{tag} - mn); "
            f"let e = select(0.0, exp({p}.x - mn), ok);\n      z{tag} = z{tag} * c + e * {p}.y; "
            f"o{tag} = o{tag} * c + e * {acc}; mx{tag} = mn; }}")


def _splits_wgsl(a: AttnShape, pos: str) -> tuple[str, str]:
    """WGSL of the keys a split spans and the splits that hold keys 0..pos, and the first split
    a merge reads (a sliding window's first holds key pos + 1 - window)."""
    head = f"  let span = {a.span(pos)};  // keys a split\n  let ns = ({pos} + span) / span;  // splits that hold keys 0..pos"
    s0 = "0u" if not a.window else f"select(0u, ({pos} + 1u - {a.window}u) / span, {pos} + 1u > {a.window}u)"
    return head, s0


def combine_wgsl(a: AttnShape, pos: str = "st.pos", row: str = "h") -> str:
    """`fn combine4(h, d4) -> vec4`: merge the split-K partials of head h (decode, one token at
    position `pos`, its partials at row `row` of heads x splits: a WGSL expression of h).

    Both loops take `a.unroll` splits a pass, their loads written out before their sums, so
    that a long context's dozens of splits can cost a few memory round trips, not one each;
    with `a.at_once` one loop, a running max (a round trip a pass, not two)."""
    d4 = a.head_dim // 4
    u = a.unroll
    head, s0 = _splits_wgsl(a, pos)
    sink = _sink(a, "h")
    base = f"{row} * {a.max_splits}u"
    # split s + j, clamped to the last (a repeated split adds nothing to the maximum, and its
    # weight is zeroed in the sums)
    idx = "\n".join(f"    let s{j} = {base} + min(s + {j}u, ns - 1u);" for j in range(u))
    loads = " ".join(f"let p{j} = ml[s{j}]; let a{j} = acc[s{j} * {d4}u + d4];" for j in range(u))
    if a.at_once:
        online = "\n".join(_merge_one("", f"p{j}", f"a{j}", f"s + {j}u < ns") for j in range(u))
        passes = f"""{_merge_start(a, "", sink)}
  for (var s = {s0}; s < ns; s += {u}u) {{
{idx}
    {loads}
{online}
  }}"""
    else:
        maxes = " ".join(f"let m{j} = ml[s{j}].x;" for j in range(u))
        mx_all = "m0"
        for j in range(1, u):
            mx_all = f"max({mx_all}, m{j})"
        sums = "\n".join(f"    {{ let e = select(0.0, exp(p{j}.x - mx), s + {j}u < ns); z += e * p{j}.y; o += e * a{j}; }}"
                         for j in range(u))
        passes = f"""  var mx = {sink if a.sinks >= 0 else "-3.0e38"};
  for (var s = {s0}; s < ns; s += {u}u) {{
{idx}
    {maxes}
    mx = max(mx, {mx_all});
  }}
  var z = {f"exp({sink} - mx)" if a.sinks >= 0 else "0.0"};
  var o = vec4<f32>(0.0);
  for (var s = {s0}; s < ns; s += {u}u) {{
{idx}
    {loads}
{sums}
  }}"""
    return f"""
fn combine4(h: u32, d4: u32) -> vec4<f32> {{
{head}
{passes}
  return o / z;
}}
"""


def staged_combine_wgsl(a: AttnShape, wg: int, kp4: int, k4: int, xt: str) -> str:
    """`fn prologue` of the `attn` input with AttnShape.at_once: each thread merges its words
    lid + j wg of the partials in one pass over the splits (a running max per word, as
    combine4's at_once), `a.unroll` splits a pass, every word's and split's loads of a pass
    written out before their sums; into xs, then one barrier."""
    d4, u = a.head_dim // 4, a.unroll
    words = -(-kp4 // wg)
    head, s0 = _splits_wgsl(a, "st.pos")
    lines, loads, sums = [], [], []
    for j in range(words):
        sink = _sink(a, f"h{j}")
        lines.append(f"  let i{j} = min(lid + {j * wg}u, {k4 - 1}u);\n  let h{j} = i{j} / {d4}u;\n  let c{j} = i{j} % {d4}u;\n"
                     + _merge_start(a, str(j), sink))
        for q in range(u):
            loads.append(f"    let s{j}_{q} = h{j} * {a.max_splits}u + min(s + {q}u, ns - 1u); "
                         f"let p{j}_{q} = ml[s{j}_{q}]; let a{j}_{q} = acc[s{j}_{q} * {d4}u + c{j}];")
            sums.append(_merge_one(str(j), f"p{j}_{q}", f"a{j}_{q}", f"s + {q}u < ns"))
    stores = "\n".join(f"  if (lid + {j * wg}u < KP4) {{ xs[lid + {j * wg}u] = {xt}(select(vec4<f32>(0.0), o{j} / z{j}, "
                       f"lid + {j * wg}u < K4)); }}" for j in range(words))
    nl = "\n"
    return f"""
var<workgroup> xs: array<{xt}, KP4>;
fn prologue(lid: u32, xb: u32, sgs: u32) {{
{head}
{nl.join(lines)}
  for (var s = {s0}; s < ns; s += {u}u) {{
{nl.join(loads)}
{nl.join(sums)}
  }}
{stores}
  workgroupBarrier();
}}
fn X(xb: u32, i: u32) -> {xt} {{ return xs[i]; }}
"""


def _ssp_sum(v: str, sg: bool) -> tuple[str, str]:
    """WGSL of a workgroup-wide sum of each thread's `v` through `ssp`: each subgroup's sum (or
    each thread's value) stored, then, after a barrier, the loop that adds them into `tot`."""
    if sg:
        return (f"let t = subgroupAdd({v}); if (lid % sgs == 0u) {{ ssp[lid / sgs] = t; }}",
                # (rounded up: a workgroup narrower than the hardware subgroup is one subgroup)
                "for (var j = 0u; j < (WG + sgs - 1u) / sgs; j++) { tot += ssp[j]; }")
    return f"ssp[lid] = {v};", "for (var j = 0u; j < WG; j++) { tot += ssp[j]; }"


def input_wgsl(spec: LinearSpec, sig: Signature, wg: int, stage: bool, sg: bool, half: bool = False,
               at_once: bool = False) -> str:
    """`fn X(xb, i) -> vec4`: x[4i..4i+4] as the mat-vec consumes it (as f16s with `half`,
    converted once where staged), and `fn prologue(lid)`.

      plain    the input row, read where it is used
      rmsnorm  the input row times the norm weight; the 1/rms factor is a scalar applied to the
               finished dot products. Staged: the workgroup writes x·w to workgroup memory and
               sums x² on the way (one barrier); unstaged: each row group sums x² itself.
      attn     the split-K attention partials merged (flash-decoding's reduce), staged once
               per workgroup or merged where used
      post     Gemma's output norm of the linear layer before, then this one's RMSNorm: the
               stored row `part` normed and weighted (`ppv` at post_off) and added to the
               residual `x`, the sum written to `hout` by the first workgroup and staged times
               the norm weight; its 1/rms factor applied to the dot products as for rmsnorm.
               Every workgroup computes the sum (a few thousand values), so that no dispatch
               between the two layers is needed; `x` and `hout` are two buffers.

    `at_once`: a staged plain or rmsnorm input's loads of all of a thread's words (KP4 / wg of
    them) written out before any use, not one word a loop iteration (a round trip each).
    """
    k4, kp4 = spec.k // 4, spec.kp // 4
    ragged = spec.k % UNIT != 0
    xb = "(st.n - 1u) * K4" if spec.last_row else "0u"
    if spec.experts and spec.experts.x_per_slot:
        xb = "slot * K4"
    head = f"const K4: u32 = {k4}u;\nconst KP4: u32 = {kp4}u;\nfn xbase() -> u32 {{ return {xb}; }}\n"
    get = "x[xb + i]" if not ragged else "select(vec4<f32>(0.0), x[xb + min(i, K4 - 1u)], i < K4)"
    xt = "vec4<f16>" if half else "vec4<f32>"

    words = -(-kp4 // wg)  # a thread's words of x, staged

    def each_word(load: str, use: str) -> str:
        """WGSL staging a thread's words i = lid, lid + wg, ..: `load` (a function of xb and
        the word) for each, then `use` (of i and v) where i is a word of the row; written out
        (`at_once`: every load, of a word clamped to the row, before any use) or as a loop."""
        if not at_once:
            return f"  for (var i = lid; i < KP4; i += {wg}u) {{ let v = {load}(xb, i); {use} }}"
        loads = "\n".join(f"  let v{j} = {load}(xb, min(lid + {j * wg}u, KP4 - 1u));" for j in range(words))
        uses = "\n".join(f"  if (lid + {j * wg}u < KP4) {{ let i = lid + {j * wg}u; let v = v{j}; {use} }}" for j in range(words))
        return loads + "\n" + uses

    def read_or_stage(value: str) -> str:
        """X(xb, i) = `value`, computed where it is used or once into workgroup memory."""
        if half:
            value = f"vec4<f16>({value})"
        if not stage:
            return f"fn X(xb: u32, i: u32) -> {xt} {{ return {value}; }}\nfn prologue(lid: u32, xb: u32, sgs: u32) {{}}\n"
        return f"""
var<workgroup> xs: array<{xt}, KP4>;
fn XV(xb: u32, i: u32) -> {xt} {{ return {value}; }}
fn prologue(lid: u32, xb: u32, sgs: u32) {{
{each_word("XV", "xs[i] = v;")}
  workgroupBarrier();
}}
fn X(xb: u32, i: u32) -> {xt} {{ return xs[i]; }}
"""

    if spec.prologue == "plain":
        sig.storage("x", "array<vec4<f32>>")
        return head + read_or_stage(get)
    if spec.prologue == "rmsnorm":
        sig.storage("x", "array<vec4<f32>>")
        declare_pv(sig)
        w = f"pv[{spec.nw_off // 4}u + {'min(i, K4 - 1u)' if ragged else 'i'}]"
        raw = f"fn XR(xb: u32, i: u32) -> vec4<f32> {{ return {get}; }}\nfn NW(i: u32) -> vec4<f32> {{ return {w}; }}\n"
        if not stage:
            return head + raw + f"fn X(xb: u32, i: u32) -> {xt} {{ return {xt}(XR(xb, i) * NW(i)); }}\nfn prologue(lid: u32, xb: u32, sgs: u32) {{}}\n"
        # the sum of x² of the whole row: per subgroup (or per thread), merged after the barrier
        part, total = _ssp_sum("ss", sg)
        return head + raw + f"""
var<workgroup> xs: array<{xt}, KP4>;
var<workgroup> ssp: array<f32, {wg}>;
var<private> ss_all: f32;
fn prologue(lid: u32, xb: u32, sgs: u32) {{
  var ss = 0.0;
{each_word("XR", f"ss += dot(v, v); xs[i] = {xt}(v * NW(i));")}
  {part}
  workgroupBarrier();
  var tot = 0.0;
  {total}
  ss_all = tot;
}}
fn X(xb: u32, i: u32) -> {xt} {{ return xs[i]; }}
"""
    if spec.prologue == "post":
        if not stage:
            raise ValueError("the post-norm prologue stages x: a row of this length does not fit")
        sig.storage("x", "array<vec4<f32>>")
        sig.storage("part", "array<vec4<f32>>")
        sig.storage("ppv", "array<vec4<f32>>")
        sig.storage("hout", "array<vec4<f32>>", write=True)
        declare_pv(sig)
        at = "min(i, K4 - 1u)" if ragged else "i"
        ok = "i < K4" if ragged else "true"
        part, total = _ssp_sum("v", sg)
        return head + f"""
var<workgroup> xs: array<{xt}, KP4>;
var<workgroup> ssp: array<f32, {wg}>;
var<private> ss_all: f32;
var<private> first_group: bool;
fn wg_sum(v: f32, lid: u32, sgs: u32) -> f32 {{
  workgroupBarrier();  // an earlier sum's reads of ssp are done
  {part}
  workgroupBarrier();
  var tot = 0.0;
  {total}
  return tot;
}}
fn PART(i: u32) -> vec4<f32> {{ return select(vec4<f32>(0.0), part[{at}], {ok}); }}
fn prologue(lid: u32, xb: u32, sgs: u32) {{
  var ss = 0.0;
  for (var i = lid; i < KP4; i += {wg}u) {{ let o = PART(i); ss += dot(o, o); }}
  let sc = inverseSqrt(wg_sum(ss, lid, sgs) / {float(spec.k)} + {spec.eps!r});
  var sh = 0.0;
  for (var i = lid; i < KP4; i += {wg}u) {{
    let v = select(vec4<f32>(0.0), x[{at}] + PART(i) * sc * ppv[{spec.post_off // 4}u + {at}], {ok});
    if (first_group && {ok}) {{ hout[i] = v; }}
    sh += dot(v, v);
    xs[i] = {xt}(v * pv[{spec.nw_off // 4}u + {at}]);
  }}
  ss_all = wg_sum(sh, lid, sgs);
  workgroupBarrier();
}}
fn X(xb: u32, i: u32) -> {xt} {{ return xs[i]; }}
"""
    if spec.prologue == "attn":
        a = spec.attn
        assert a is not None
        sig.storage("ml", "array<vec2<f32>>")
        sig.storage("acc", "array<vec4<f32>>")
        if a.sinks >= 0:
            declare_pv(sig)
        d4 = a.head_dim // 4
        if a.at_once and stage:
            return head + staged_combine_wgsl(a, wg, kp4, k4, xt)
        get = f"combine4(i / {d4}u, i % {d4}u)"
        if ragged:
            get = f"select(vec4<f32>(0.0), combine4(min(i, K4 - 1u) / {d4}u, min(i, K4 - 1u) % {d4}u), i < K4)"
        return head + combine_wgsl(a) + read_or_stage(get)
    raise ValueError(f"unknown prologue {spec.prologue!r}")


# Called between the early weight requests and the prologue, which reads x: a persistent
# kernel (kernels/persistent.py) waits there for the stage before it, so that those requests
# overlap the wait; on its own the kernel does nothing there.
EARLY_HOOK = "fn early_requested() {}"


def matvec_kernel(spec: LinearSpec, wg: int = 128, tpr: int = 32, subgroups: str | None = None,
                  shared_bytes: int = 16384, ilp: int = 1, int8: bool = False, blocks: int = 1,
                  spread: bool = False, int8_direct: bool = False, early: int = 0, half: bool = False,
                  shuffle: bool = False, at_once: bool = False) -> Kernel:
    """One token: each group of `tpr` threads computes one row pair; grid = matvec_grid(...).

    A workgroup takes `blocks` consecutive blocks of wg/tpr row pairs, one after the other,
    so that its prologue (x staged, normalised, quantized) serves more rows.

    Each loop iteration of a thread issues the loads of `ilp` units of both rows before it
    uses any (more bytes in flight per thread; within 1 % on the H200).

    `int8` (quantized segments, INT8_FORMATS; see `int8_ok`): the input is quantized to int8
    per 32-value unit and the dot products run on `dot4I8Packed` (`ilp` units an iteration).

    `spread` (float weights, SPREAD_FORMATS; ignored otherwise): a row group's threads read
    adjacent 16-byte words -- in each block of `tpr` units, the words of a thread's unit sit
    `tpr` words apart -- instead of each thread reading its unit's 64 (f16) or 128 (f32)
    contiguous bytes, which takes a warp's load 4-8 times the cache lines; x is read at the
    same positions. Same sums, other order. 0.5B f16 decode step 1019 -> 914 µs, 1.5B 2145 ->
    1672 µs on an H200.

    `int8_direct`: with a plain input, the int8 path quantizes x from memory instead of
    staging it in workgroup memory first (room for the widest inputs: the 1.5B's down).

    `early` (one unit in flight, one row block; float weights, or on the int8 path q4_0 and
    q8_0: `early_ok`): each thread requests the weight words of its first `early` units (0:
    none) before the prologue, so that their memory latency overlaps the staging (and the
    int8 quantization) of x, and decodes them after it.

    `half` (f16 weights only; ignored otherwise): the products in f16 as the weights are
    stored, x converted to f16 once where it is staged (a plain input is staged for it), each
    8 products summed in f16, then in f32: no conversion a weight (the f16 decode was found
    bound by its instructions, not by memory). Needs the device's shader-f16.

    `subgroups` is None (reduce through workgroup memory) or the WGSL directive that enables
    subgroup operations on this backend ("" where none is needed): a row group's sum is then
    one subgroupAdd when the hardware subgroup is exactly `tpr` lanes wide, and with `shuffle`
    log2(tpr) subgroupShuffleXor where a subgroup holds several row groups (else a tree
    through workgroup memory). The input is staged in workgroup memory when it fits in
    `shared_bytes`.
    """
    sig = Signature().state()
    for s in spec.segments:
        if (err := FORMATS[s.fmt].check_k(spec.k)):
            raise ValueError(err)
    use_sg = subgroups is not None
    if int8 and not int8_ok(spec, wg, shared_bytes, int8_direct):
        raise ValueError(f"int8 activations need weights of {', '.join(INT8_FORMATS)} and room to stage x")
    half = half and not int8 and f16_weights(spec)
    ft = "f16" if half else "f32"
    # int8: x is quantized from workgroup memory, or (plain input, `int8_direct`) from memory;
    # half: x converted to f16 once a workgroup
    combine = bool(spec.experts and spec.experts.combine)
    if combine and not (spec.experts.x_per_slot and spec.epilogue == "add" and blocks == 1
                        and spec.prologue == "plain" and wg // tpr >= spec.experts.used):
        raise ValueError("the experts' combine is the down mat-vec's (x_per_slot, plain input, epilogue add, "
                         "one row block, a row group for each chosen expert)")
    # (combined: each row group reads its own slot's x, from memory)
    stage = ((spec.prologue != "plain" or (int8 and not int8_direct) or half) and not combine
             and spec.kp * (2 if half else 4) + wg * 20 <= shared_bytes)
    norm = spec.prologue in ("rmsnorm", "post")
    if spec.prologue == "post" and (spec.experts or spec.last_row or blocks > 1):
        raise ValueError("the post-norm prologue is a one-token dense mat-vec's, in one row block")
    early = int(early) if early_ok(spec, int8) and ilp == 1 and blocks == 1 and not combine else 0
    spread = spread and not int8 and spread_ok(spec)
    words = SPREAD_FORMATS[spec.segments[0].fmt] if spread else 0  # 16-byte words per unit
    # x's vec4 $i of unit @u (8 per unit): 8 / words of them per weight word
    xpw = 8 // words if spread else 0
    xi = f"{xpw}u * upos(@u, $i / {xpw}) + $i % {xpw}" if spread else "@u * 8u + $i"
    body = "\n".join([
        rows_wgsl(spec),
        loaders_wgsl(spec, sig, int8, spread, early > 0, half),
        input_wgsl(spec, sig, wg, stage, use_sg, half, at_once),
        epilogue_wgsl(spec, sig),
    ])
    slot, choose = "0u", ""
    if spec.experts and spec.experts.router:  # the choice made here, the table written for later kernels
        sig.storage("rl", "array<f32>")
        sig.storage("route", "array<vec2<u32>>", write=True)
        decls, code = route_wgsl(spec.experts.router, wg, "rl[e]", spec.experts.router.subgroups and use_sg)
        body += decls + "var<private> slot: u32;\n"
        slot, choose = "slot", code + """
  slot = wid.z;
  ex = rt_top_i[slot];
  if (g == 0u && wid.z == 0u && lid < RT_K) {
    route[lid] = vec2<u32>(rt_top_i[lid], bitcast<u32>(rt_gate(rt_top_v[lid]) / rt_z));
  }"""
    elif spec.experts:  # slot j = wid.z of the token's chosen experts
        sig.storage("route", "array<vec2<u32>>")
        body += "var<private> slot: u32;\n"
        slot, choose = "slot", "\n  slot = wid.z;\n  ex = route[slot].x;"
    # the row pair's result: to the epilogue, or (combine) weighted into the sum over the slots
    finish = f"epi({slot}, p, a.x * sc, a.y * sc);"
    pair = f"(g * {blocks}u + blk) * (WG / TPR) + lid / TPR"
    combined = ""
    if combine:
        bias = ""
        if spec.bias:  # each expert's own
            declare_pv(sig)
            body += PV_HELPER
            b0, b1 = _bias_pair(f"{spec.bias_off}u + ex * N")
            bias = f" + vec2<f32>({b0}, select(0.0, {b1}, row1(p) < N))"
        finish = f"cred[lid / TPR] = bitcast<f32>(route[slot].y) * (vec2<f32>(a.x * sc, a.y * sc){bias});"
        used = spec.experts.used
        body += f"const USED: u32 = {used}u;\nconst PPW: u32 = WG / TPR / USED;\nvar<workgroup> cred: array<vec2<f32>, WG / TPR>;\n"
        choose = "\n  slot = (lid / TPR) % USED;\n  ex = route[slot].x;"
        # (row groups past the last whole set of slots take no pair)
        pair = "select(NP, g * PPW + lid / TPR / USED, lid / TPR < PPW * USED)"
        combined = """
  workgroupBarrier();  // every slot's weighted sums are in cred
  let pw = g * PPW + lid;
  if (lid < PPW && pw < NP) {
    var s = vec2<f32>(0.0);
    for (var j = 0u; j < USED; j++) { s += cred[lid * USED + j]; }
    epi(0u, pw, s.x, s.y);
  }"""
    if norm and not stage:  # each row group sums x² over the x it reads
        xw = f"let xr = select(vec4<f32>(0.0), XR(xb, @x), @ok); xv@j[$i] = vec4<{ft}>(xr * NW(@x)); ss += dot(xr, xr);"
        scale = f"let sc = inverseSqrt(a.z / {float(spec.k)} + {spec.eps!r});"
    else:
        xw = f"xv@j[$i] = select(vec4<{ft}>(0.0), X(xb, @x), @ok);"
        scale = f"let sc = inverseSqrt(ss_all / {float(spec.k)} + {spec.eps!r});" if norm else "let sc = 1.0;"
    xw = xw.replace("@x", xi)
    sg_arg = ", @builtin(subgroup_size) sgs: u32" if use_sg else ""
    if spec.experts and spec.experts.router and spec.experts.router.subgroups and use_sg:
        sg_arg += ", @builtin(subgroup_invocation_id) sl: u32"
    sg_val = "" if use_sg else "let sgs = 1u;"

    def dots(w: str, x: str) -> str:
        if half:  # f16 sums of 8 products, then f32
            return " + ".join(f"f32(dot({w}[{i}], {x}[{i}]) + dot({w}[{i + 1}], {x}[{i + 1}]))" for i in range(0, 8, 2))
        return " + ".join(f"dot({w}[{i}], {x}[{i}])" for i in range(8))

    # units u + j*TPR, j < ilp; a unit past the row's end re-reads the last one (clamped) and
    # meets a zero x, so every load is unconditional. Each row's unit is used right after its
    # load: only one unit of weights is live at a time (a CPU adapter spills otherwise), and
    # GPU compilers hoist the loads of an iteration themselves.
    units, xs, uses = [], [], []
    for j in range(ilp):
        uj, ok = ("u", "true") if j == 0 else (f"u{j}", f"ok{j}")
        if j:
            units.append(f"      let ok{j} = u + {j}u * TPR < NU;\n      let u{j} = min(u + {j}u * TPR, NU - 1u);")
        xs.append(f"      var xv{j}: array<vec4<{ft}>, 8>;\n%8    " + xw.replace("@j", str(j)).replace("@u", uj).replace("@ok", ok))
        uses.append(f"      {{ let w = load_row(r0, {uj}); a.x += {dots('w', f'xv{j}')}; }}\n"
                    f"      {{ let w = load_row(r1c, {uj}); a.y += {dots('w', f'xv{j}')}; }}")
    # with `early` the first units are taken before the loop (below)
    loop = "\n".join([f"    for (var u = lane{f' + {early}u * TPR' if early else ''}; u < NU; u += TPR * {ilp}u) {{",
                      *units, *xs, *uses, "    }"])
    def int8_unit(j: str, u: str, ok: str = "") -> str:
        """The int8 path's x unit `u` (of this row group's x, from unit xo) as x0{j}, x1{j}, d{j};
        where `ok` is false, a zero scale (a clamped unit past the row's end)."""
        d = f"select(vec2<f32>(0.0), xd[xo + {u}], {ok})" if ok else f"xd[xo + {u}]"
        return (f"      let x0{j} = xq[2u * (xo + {u})];\n      let x1{j} = xq[2u * (xo + {u}) + 1u];\n"
                f"      let d{j} = {d};")

    pre, firsts = "", []
    if early:  # the first units (their words requested before the prologue: ew0_e, ew1_e), then the rest
        pre = """  let ep = min(g * (WG / TPR) + lid / TPR, NP - 1u);
  let er0 = row0(ep);
  let er1 = select(er0, row1(ep), row1(ep) < N);"""
        for e in range(early):
            pre += f"""
  let eu{e} = min(lane + {e}u * TPR, NU - 1u);
  let ew0_{e} = raw_row(er0, eu{e});
  let ew1_{e} = raw_row(er1, eu{e});"""
            if int8:  # (xo: below)
                firsts += ["    {", int8_unit("", f"eu{e}", f"lane + {e}u * TPR < NU"),
                           f"      a.x += dotw_row(r0, ew0_{e}, x0, x1, d);",
                           f"      a.y += dotw_row(r1c, ew1_{e}, x0, x1, d);", "    }"]
                continue
            firsts += ["    {", f"      let eok = lane + {e}u * TPR < NU;\n      var xv0: array<vec4<{ft}>, 8>;\n%8    "
                       + xw.replace("@j", "0").replace("@u", f"eu{e}").replace("@ok", "eok"),
                       f"      {{ let w = dec_row(r0, ew0_{e}); a.x += {dots('w', 'xv0')}; }}",
                       f"      {{ let w = dec_row(r1c, ew1_{e}); a.y += {dots('w', 'xv0')}; }}", "    }"]
        loop = "\n".join([*firsts, loop])
    if int8:  # (xo: the first unit of this row group's x; units u + j*TPR, j < ilp, as above, a
        # unit past the row's end re-reading the last one with a zero scale)
        units = []
        for j in range(ilp):
            if j:
                units.append(f"      let u{j} = min(u + {j}u * TPR, NU - 1u);")
            units.append(int8_unit(f"_{j}", f"u{j}", f"u + {j}u * TPR < NU") if j else int8_unit("_0", "u"))
        a0 = " + ".join(f"dot_row(r0, {'u' if j == 0 else f'u{j}'}, x0_{j}, x1_{j}, d_{j})" for j in range(ilp))
        a1 = " + ".join(f"dot_row(r1c, {'u' if j == 0 else f'u{j}'}, x0_{j}, x1_{j}, d_{j})" for j in range(ilp))
        loop = "\n".join([f"    let xo = {'slot * NU' if combine else '0u'};", *firsts,
                          f"    for (var u = lane{f' + {early}u * TPR' if early else ''}; u < NU; u += TPR * {ilp}u) {{",
                          *units, f"      a.x += {a0};", f"      a.y += {a1};", "    }"])
    # a row group's sum: one subgroupAdd when the group is one hardware subgroup; when it spans
    # several, one subgroupAdd each and the group's subgroup sums added through workgroup
    # memory (one barrier); several groups a subgroup (`shuffle`): log2(tpr) shuffles within
    # it; otherwise a tree through workgroup memory (log2(tpr) barriers)
    sg_reduce = "{"
    if use_sg and tpr > 1:
        again = "\n      workgroupBarrier();  // the next row block writes red again" if blocks > 1 else ""
        few = ("} else if (TPR < sgs && sgs % TPR == 0u) {\n"
               "      for (var s = TPR / 2u; s > 0u; s = s >> 1u) { a += subgroupShuffleXor(a, s); }\n    ") if shuffle else ""
        sg_reduce = f"""if (sgs == TPR) {{ a = subgroupAdd(a); {few}}} else if (TPR > sgs && TPR % sgs == 0u) {{
      let t = subgroupAdd(a);
      if (lid % sgs == 0u) {{ red[lid / sgs] = t; }}
      workgroupBarrier();
      let first = (lid / TPR) * (TPR / sgs);
      a = vec4<f32>(0.0);
      for (var j = 0u; j < TPR / sgs; j++) {{ a += red[first + j]; }}{again}
    }} else {{"""
    reduce = f"""  {{
    {sg_reduce}
      red[lid] = a;
      workgroupBarrier();
      for (var s = TPR / 2u; s > 0u; s = s >> 1u) {{
        if (lane < s) {{ red[lid] = red[lid] + red[lid + s]; }}
        workgroupBarrier();
      }}
      a = red[lid];
    }}
  }}""" if tpr > 1 else ""  # (a CPU adapter's one thread per row pair: no code, no barriers to compile)
    body += unroll(f"""
const WG: u32 = {wg}u;
const TPR: u32 = {tpr}u;
const NU: u32 = {spec.kp // UNIT}u;
{SPREAD_POS.replace("WPU", f"{words}u") if spread else ""}
var<workgroup> red: array<vec4<f32>, WG>;
{QUANTIZE_X.replace("XS", f"{spec.experts.used if combine else 1}u") if int8 else ""}
{EARLY_HOOK if early else ""}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32{sg_arg}) {{
  {sg_val}
  let g = wid.y * nwg.x + wid.x;
  let lane = lid % TPR;{choose}{chr(10) + "  first_group = g == 0u;" if spec.prologue == "post" else ""}
  let xb = xbase();
{pre}
  {"early_requested();" if early else ""}
  prologue(lid, xb, sgs);
  {"quantize_x(lid, xb);" if int8 else ""}
  for (var blk = 0u; blk < {blocks}u; blk++) {{
  let p = {pair};
  let pc = min(p, NP - 1u);
  let r0 = row0(pc);
  let r1c = select(r0, row1(pc), row1(pc) < N);  // an odd last row re-reads row0
  var a = vec4<f32>(0.0);  // row0 . x, row1 . x, sum of x² (unstaged RMSNorm)
  var ss = 0.0;
  if (p < NP) {{
{loop}
  }}
  a.z = ss;
{reduce}
  if (lane == 0u && p < NP) {{
    {scale}
    {finish}
  }}
  }}{combined}
}}
""")
    name = f"matvec_{spec.epilogue}_{spec.prologue}_{'+'.join(s.fmt for s in spec.segments)}{'_h' if half else ''}"
    k = sig.kernel(name, body)
    if half:
        k = Kernel(k.name, "enable f16;\n" + k.wgsl, k.bindings)
    if use_sg and subgroups:
        k = Kernel(k.name, subgroups + "\n" + k.wgsl, k.bindings)
    return k


def thin_matmul_kernel(spec: LinearSpec, tokens: int = 8, wg: int = 128, tpr: int = 32,
                       subgroups: str | None = None) -> Kernel:
    """A few tokens (st.n, a batched decode step's rows): the mat-vec's row groups (`tpr`
    threads a row pair, wg/tpr pairs a workgroup), each unit of weights loaded once and
    multiplied with up to `tokens` rows of x; grid = thin_matmul_grid(...)(n), its z the
    groups of `tokens` rows. Plain input (x rows of k values), any epilogue but `partial`."""
    assert spec.prologue == "plain" and spec.epilogue != "partial" and not spec.last_row
    sig = Signature().state()
    for s_ in spec.segments:
        if (err := FORMATS[s_.fmt].check_k(spec.k)):
            raise ValueError(err)
    sig.storage("x", "array<vec4<f32>>")
    body = "\n".join([rows_wgsl(spec), loaders_wgsl(spec, sig), epilogue_wgsl(spec, sig)])
    use_sg = subgroups is not None and tpr > 1
    ragged = spec.k % UNIT != 0
    xget = "x[xb + u * 8u + $i]" if not ragged else "select(vec4<f32>(0.0), x[xb + min(u * 8u + $i, K4 - 1u)], u * 8u + $i < K4)"
    dots0 = " + ".join(f"dot(w0[{i}], xv[{i}])" for i in range(8))
    dots1 = " + ".join(f"dot(w1[{i}], xv[{i}])" for i in range(8))
    if tpr == 1:
        reduce = ""
    elif use_sg:
        reduce = "      if (sgs == TPR) { v = subgroupAdd(v); } else {\n" + _TREE + "      }\n"
    else:
        reduce = "      {\n" + _TREE + "      }\n"
    body += unroll(f"""
const WG: u32 = {wg}u;
const TPR: u32 = {tpr}u;
const TB: u32 = {tokens}u;
const NU: u32 = {spec.kp // UNIT}u;
const K4: u32 = {spec.k // 4}u;
var<workgroup> red: array<vec2<f32>, WG>;
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32{", @builtin(subgroup_size) sgs: u32" if use_sg else ""}) {{
  let g = wid.y * nwg.x + wid.x;
  let lane = lid % TPR;
  let t0 = wid.z * TB;
  let nt = min(st.n - min(st.n, t0), TB);
  let p = g * (WG / TPR) + lid / TPR;
  let pc = min(p, NP - 1u);
  let r0 = row0(pc);
  let r1c = select(r0, row1(pc), row1(pc) < N);  // an odd last row re-reads row0
  var a: array<vec2<f32>, TB>;
  if (p < NP) {{
    for (var u = lane; u < NU; u += TPR) {{
      let w0 = load_row(r0, u);
      let w1 = load_row(r1c, u);
      for (var t = 0u; t < nt; t++) {{
        let xb = (t0 + t) * K4;
        var xv: array<vec4<f32>, 8>;
%8      xv[$i] = {xget};
        a[t] += vec2<f32>({dots0}, {dots1});
      }}
    }}
  }}
  for (var t = 0u; t < TB; t++) {{
    var v = a[t];
{reduce}    if (lane == 0u && p < NP && t < nt) {{ epi(t0 + t, p, v.x, v.y); }}
  }}
}}
""")
    k = sig.kernel(f"thin_matmul_{spec.epilogue}_{'+'.join(s_.fmt for s_ in spec.segments)}", body)
    if use_sg and subgroups:
        k = Kernel(k.name, subgroups + "\n" + k.wgsl, k.bindings)
    return k


# a row group's sum of v through workgroup memory (log2(TPR) barriers; every thread takes part)
_TREE = """        red[lid] = v;
        workgroupBarrier();
        for (var s = TPR / 2u; s > 0u; s = s >> 1u) {
          if (lane < s) { red[lid] = red[lid] + red[lid + s]; }
          workgroupBarrier();
        }
        v = red[lid - lane];
        workgroupBarrier();
"""


def epilogue_kernel(spec: LinearSpec, splits: int = 1, src: str = "x", wg: int = 64, name: str = "") -> Kernel:
    """`spec`'s epilogue (bias, RoPE and the KV append, SiLU·mul, a residual add, ...) on values
    already summed: each token's row of N values in `src`, or with `splits` > 1 the sums of its
    `splits` rows there (row t * splits + s, as a split-K matmul's `partial` epilogue writes
    them), so that a matmul whose epilogue needs whole sums can split K; the unfused decode's
    stand-alone epilogues too (elementwise.py). A thread a row pair of a token of the first
    st.n; grid = epilogue_grid(spec, wg)(n)."""
    assert spec.epilogue != "partial"
    sig = Signature().state()
    sig.storage(src, "array<f32>")
    body = rows_wgsl(spec) + epilogue_wgsl(spec, sig) + f"""
@compute @workgroup_size({wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
  let p = {spec.pair0}u + gid.x;
  let t = gid.y;
  if (gid.x >= {spec.part_pairs}u || t >= st.n) {{ return; }}
  let b = t * {splits}u * N;
  let r1 = min(row1(p), N - 1u);
  var v0 = 0.0;
  var v1 = 0.0;
  for (var s = 0u; s < {splits}u; s++) {{
    v0 += {src}[b + s * N + row0(p)];
    v1 += {src}[b + s * N + r1];
  }}
  epi(t, p, v0, select(0.0, v1, row1(p) < N));
}}
"""
    k = sig.kernel(name or (f"split_finish_{spec.epilogue}" if splits > 1 else spec.epilogue), body)
    if spec.y_f16:  # (a gated epilogue's f16 outputs)
        k = Kernel(k.name, "enable f16;\n" + k.wgsl, k.bindings)
    return k


def epilogue_grid(spec: LinearSpec, wg: int = 64):
    return lambda n: (-(-spec.part_pairs // wg), n, 1)


def thin_matmul_grid(spec: LinearSpec, tokens: int = 8, wg: int = 128, tpr: int = 32):
    gx, gy, _ = grid_2d(matvec_groups(spec, wg, tpr))
    return lambda n: (gx, gy, -(-n // tokens))


def early_ok(spec: LinearSpec, int8: bool = False) -> bool:
    """Can this mat-vec request its first units' words before its prologue (matvec_kernel's
    `early`): float weights that spread, or on the int8 path formats with split int8 loads
    of one word count?"""
    if int8:
        return (all(FORMATS[s.fmt].has_i8_split() for s in spec.segments)
                and len({FORMATS[s.fmt].split_words() for s in spec.segments}) == 1)
    return spread_ok(spec)


def spread_ok(spec: LinearSpec) -> bool:
    """Can this mat-vec spread its units' words (float weights, one word count per unit)?"""
    return (all(s.fmt in SPREAD_FORMATS for s in spec.segments)
            and len({SPREAD_FORMATS[s.fmt] for s in spec.segments}) == 1)


def int8_ok(spec: LinearSpec, wg: int, shared_bytes: int, direct: bool = False) -> bool:
    """Can this mat-vec take int8 activations (formats, and room for the int8 copy of x, beside
    x itself unless a plain input is quantized straight from memory: `direct`)?"""
    combine = spec.experts is not None and spec.experts.combine  # (every slot's x quantized, from memory)
    staged = 0 if (direct or combine) and spec.prologue == "plain" else spec.kp * 4
    rows = spec.experts.used if combine else 1
    return (all(s.fmt in INT8_FORMATS for s in spec.segments)
            and staged + rows * (spec.kp + spec.kp // 4) + wg * 20 <= shared_bytes)


def f16_weights(spec: LinearSpec) -> bool:
    """Are all of the matrix's weights f16 (what `matvec_kernel(half=True)` multiplies)?"""
    return all(s.fmt == "f16" for s in spec.segments)


def half_ok(gpu: Gpu) -> bool:
    """Can `matvec_kernel(half=True)` compile here: shader-f16, on Dawn (wgpu-native 0.32's naga
    types a bitcast of u32 words to f16 vectors as f32s and rejects the shader)."""
    return gpu.has_f16 and gpu.backend == "dawn"


def half_usable(gpu: Gpu) -> bool:
    """`half_ok`, and the f16 mat-vec computes right on this device: Dawn offers f16 on NVIDIA
    only behind a toggle, as old drivers miscompiled f16 code, so it is checked against numpy
    once per device (as the f16 tiles are, kernels/mma.f16_usable)."""
    return half_ok(gpu) and gpu.check("f16_matvec", lambda: _half_works(gpu))


def _half_works(gpu: Gpu) -> bool:
    import numpy as np

    from .common import agrees

    rng = np.random.default_rng(0)
    rows, k = 75, 200
    w = rng.standard_normal((rows, k)).astype(np.float16)
    x = rng.standard_normal(k).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment("f16", rows),))
    want = w.astype(np.float32) @ x.astype(np.float16).astype(np.float32)
    kernel = matvec_kernel(spec, subgroups=gpu.subgroups_wgsl(), half=True)
    return agrees(gpu, kernel, {"x": x, "w0": FORMATS["f16"].pack(w, k)}, "y", want, matvec_grid(spec), tol=2e-3)


def matvec_groups(spec: LinearSpec, wg: int = 128, tpr: int = 32, blocks: int = 1) -> int:
    """Workgroups of a mat-vec: each takes `blocks` blocks of wg/tpr row pairs (combined
    experts: wg/tpr/used pairs of every chosen expert)."""
    per = wg // tpr // spec.experts.used if spec.experts and spec.experts.combine else wg // tpr * blocks
    return -(-spec.pairs // per)


def matvec_grid(spec: LinearSpec, wg: int = 128, tpr: int = 32, blocks: int = 1) -> tuple[int, int, int]:
    x, y, _ = grid_2d(matvec_groups(spec, wg, tpr, blocks))
    return (x, y, spec.experts.used if spec.experts and not spec.experts.combine else 1)


# --- prompt processing ---------------------------------------------------------------------
@dataclass(frozen=True)
class TokenRows:
    """Which rows a prompt matmul's workgroup multiplies (shared by the tiled and the
    matrix-unit matmuls): tokens t0.. of the batch (st.n of them, at most tmax), or with
    `spec.experts` expert wid.z's entries g0.. of the grouped list (linear.Experts).
    WGSL pieces: `decls` (module scope), `first` (the start of main), `count` (rows in all),
    `x_row(m)` (x's row of tile-relative row m), `out` (prefix of the epilogue's row)."""

    decls: str
    first: str
    count: str
    x_row_of: str  # with {m}
    out: str
    ragged: bool = False  # rows per grid z vary (an expert's pairs): tiles past them return
    block: str = ""  # the workgroup's token block where not grid y's (a tile list's entry)

    def x_row(self, m: str) -> str:
        return self.x_row_of.format(m=m)

    @classmethod
    def of(cls, spec: LinearSpec, sig: Signature) -> TokenRows:
        ex = spec.experts
        if ex is None:
            nt = "st.n"
            if spec.t0 or spec.tmax:
                nt = f"min(st.n - min(st.n, {spec.t0}u), {spec.tmax or 1 << 30}u)"
            return cls("", "", nt, f"{spec.t0}u + {{m}}", "")
        assert spec.splits == 1 and not spec.t0 and not spec.tmax
        sig.storage("groups", "array<u32>")
        x_row = "g0 + {m}" if ex.x_per_slot else f"groups[ORDER + min(g0 + {{m}}, {ex.rows - 1}u)] / {ex.used}u"
        decls = f"var<private> g0: u32;\nconst ORDER: u32 = {ex.count + 1}u;\n"
        if ex.tiles:  # the tile list's entry y: (expert << 16 | block), or all ones past the step's tiles
            first = (f"\n  if (lid == 0u) {{ let tile = groups[{tile_list_at(ex.count, ex.rows)}u + wid.y]; let e = min(tile >> 16u, "
                     f"{ex.count - 1}u); g_w = vec2<u32>(tile, groups[e + 1u] - groups[e]); }}\n"
                     "  let gw = workgroupUniformLoad(&g_w);\n  if (gw.x == 0xffffffffu) { return; }\n"
                     "  ex = gw.x >> 16u;\n  g0 = groups[ex];")
            return cls(decls + "var<workgroup> g_w: vec2<u32>;\n", first, "gw.y", x_row, "g0 + ",
                       block="(gw.x & 0xffffu)")
        # the pair count through workgroup memory, so that it is uniform and tiles past it can return
        return cls(decls + "var<workgroup> g_n: u32;\n",
                   "\n  ex = wid.z;\n  g0 = groups[ex];\n  if (lid == 0u) { g_n = groups[ex + 1u] - g0; }",
                   "workgroupUniformLoad(&g_n)", x_row, "g0 + ", ragged=True)

    def start(self, by: str, bm: int) -> str:
        """`let m0` (the workgroup's first row: grid y's block `by`, or its tile list entry's),
        and the end of a workgroup whose block starts past the rows: the grid counts every
        token for each expert, but an expert gets n * used / count pairs on average."""
        skip = "\n  if (m0 >= nt) { return; }" if self.ragged else ""
        return f"let m0 = {self.block or by} * {bm}u;{skip}"


BN = 64  # rows per tile; 16x16 threads, each `tm` tokens x 4 rows (2 pairs): 16 tm tokens per tile
XS = 9  # vec4 stride of an x tile row in workgroup memory (8 used + 1 against bank conflicts)


def matmul_kernel(spec: LinearSpec, tm: int = 4, prefetch: bool = True) -> Kernel:
    """Many tokens (st.n of them, x rows of k values): grid = matmul_grid(spec, tm)(n).

    Each step stages one 32-input unit of 16*tm tokens and BN weight rows in workgroup memory
    (rows dequantized once per tile, whatever the format), then every thread accumulates a
    tm x 4 block with dot products over the unit while (with `prefetch`) the next unit's loads
    are in flight; without it the registers that holds are free (faster on a CPU adapter).
    A larger `tm` does more multiplies per workgroup-memory load; a smaller one makes more
    workgroups for matrices with few rows, as do `spec.splits` > 1 (K split over grid z,
    epilogue "partial").
    """
    assert (spec.splits > 1) == (spec.epilogue == "partial")
    assert not (spec.pair0 or spec.npairs), "a part of the output pairs: the tile matmuls only"
    assert tm in (2, 4, 8)
    bm = 16 * tm
    assert spec.prologue == "plain" and not spec.last_row
    sig = Signature().state()
    for s in spec.segments:
        if (err := FORMATS[s.fmt].check_k(spec.k)):
            raise ValueError(err)
    sig.storage("x", "array<vec4<f32>>")
    body = "\n".join([rows_wgsl(spec), loaders_wgsl(spec, sig), epilogue_wgsl(spec, sig)])
    tiles = TokenRows.of(spec, sig)
    body += tiles.decls
    ex = spec.experts
    ragged = spec.k % UNIT != 0
    xload = "x[xi]" if not ragged else "select(vec4<f32>(0.0), x[xi], u * 8u + c < K4)"
    lines = []
    for kk in range(8):
        lines.append("    {")
        for i in range(tm):
            lines.append(f"      let a{i} = xs[(ty * {tm}u + {i}u) * {XS}u + {kk}u];")
        for j in range(4):
            # thread tx owns pairs tx and tx + 16 (tile rows 2tx, 2tx+1, 2tx+32, 2tx+33), stored
            # k-major at slots tx + 16j: a warp's loads of b_j are 16 consecutive vec4s
            lines.append(f"      let b{j} = ws[{kk * BN}u + tx + {16 * j}u];")
        for i in range(tm):
            lines.append(f"      acc{i} += vec4<f32>(dot(a{i}, b0), dot(a{i}, b1), dot(a{i}, b2), dot(a{i}, b3));")
        lines.append("    }")
    inner = "\n".join(lines)
    accs = "\n".join(f"  var acc{i} = vec4<f32>(0.0);" for i in range(tm))
    per_thread = bm * 8 // 256  # vec4s of the x tile each thread stages

    def fetch(u: str) -> str:
        """Global loads of unit `u` into registers: a weight row (threads < BN), x vec4s."""
        xs_ = "\n".join(f"""    {{ let e = lid + {256 * j}u; let m = e / 8u; let c = e % 8u;
      let xi = ({tiles.x_row("m0 + m")}) * K4 + {u} * 8u + c;
      xr[{j}] = select(vec4<f32>(0.0), {xload.replace("u * 8u", f"{u} * 8u")}, m0 + m < nt); }}""" for j in range(per_thread))
        return f"""    if (lid < {BN}u && p < NP) {{ w = load_row(r, {u}); }}
{xs_}"""

    next_fetch = ""
    if prefetch:  # the next unit's loads are in flight while this one is multiplied
        next_fetch = f"    if (u + 1u < u1) {{\n      let un = u + 1u;\n{fetch('un')}\n    }}"
    body += unroll(f"""
const K4: u32 = {spec.k // 4}u;
const NU: u32 = {spec.kp // UNIT}u;
var<workgroup> xs: array<vec4<f32>, {bm * XS}>;  // [token][k/4]
var<private> split: u32;
var<workgroup> ws: array<vec4<f32>, {BN * 8}>;  // [k/4][slot of the row]
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {{{tiles.first}
  let nt = {tiles.count};
  {tiles.start("wid.y", bm)}
  let p0 = wid.x * {BN // 2}u;
  let tx = lid3.x;
  let ty = lid3.y;
{accs}
  // tile row lid = member (lid & 1) of pair p0 + lid / 2 (rows past N stay zero)
  let p = p0 + lid / 2u;
  let r = min(select(row0(p), row1(p), (lid & 1u) == 1u), N - 1u);
  // tile row 2q + member (q = pair within the tile) sits at slot q % 16 + 16 member + 32 (q / 16)
  let slot = (lid / 2u) % 16u + 16u * (lid & 1u) + 32u * (lid / 32u);
  var w: array<vec4<f32>, 8>;
  var xr: array<vec4<f32>, {per_thread}>;
  // this workgroup's units: all of K, or split wid.z of spec.splits
  split = wid.z;  // for the epilogue; the loop bounds use wid.z (uniform, for the barriers)
  let u0 = {"0u" if ex else "wid.z"} * {-(-(spec.kp // UNIT) // spec.splits)}u;
  let u1 = min(NU, u0 + {-(-(spec.kp // UNIT) // spec.splits)}u);
{fetch("u0") if prefetch else ""}
  for (var u = u0; u < u1; u++) {{
{"" if prefetch else fetch("u")}
    if (lid < {BN}u) {{
%8    ws[$i * {BN}u + slot] = w[$i];
    }}
%{per_thread}    let e = lid + $i * 256u; xs[(e / 8u) * {XS}u + e % 8u] = xr[$i];
    workgroupBarrier();
{next_fetch}
{inner}
    workgroupBarrier();
  }}
  let pa = p0 + tx;
  let pb = p0 + tx + {BN // 4}u;
%{tm}  {{ let t = m0 + ty * {tm}u + $i; if (t < nt) {{ if (pa < NP) {{ epi({tiles.out}t, pa, acc$i.x, acc$i.y); }} if (pb < NP) {{ epi({tiles.out}t, pb, acc$i.z, acc$i.w); }} }} }}
}}
""")
    return sig.kernel(f"matmul_{spec.epilogue}_{'+'.join(s.fmt for s in spec.segments)}", body)


def matmul_grid(spec: LinearSpec, tm: int = 4):
    """Of the token count n (an expert gets at most one (token, slot) pair a token)."""
    gx = -(-spec.pairs // (BN // 2))
    if spec.experts:
        return lambda n: (gx, *spec.experts.grid_yz(n, 16 * tm))
    return lambda n: (gx, -(-n // (16 * tm)), spec.splits)
