"""Moving a model's weights to the GPU in their own format.

A linear layer's weight becomes a `GpuMatrix`: one or more segments, each a buffer in one
format. Consecutive parts of the same format (Q, K and V; gate and up) are concatenated into
one segment, so the fused kernels usually bind a single weight buffer; a part that would
exceed the adapter's storage-binding limit (128 MiB on llvmpipe) is split by rows. A layer's
vectors (its norms' weights, the QKV bias, RoPE's inverse frequencies of that layer) share one
parameter buffer, laid out by `ParamLayout`. Fused QKV and gate/up tensors (Phi-3) are taken
as they lie, their Q and K rows reordered like separate ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import ModelFileError
from ..kernels.direct_tiles import f16_copy_grid, f16_copy_kernel
from ..kernels.formats import FORMATS
from ..kernels.linear import Segment
from ..models.config import ModelConfig
from ..runtime.gpu import Gpu
from ..runtime.program import Program

SUPPORTED_TYPES = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, MXFP4"


class Tensor(Protocol):
    name: str
    fmt: str | None
    type_name: str
    shape: tuple[int, ...]

    def data(self) -> np.ndarray: ...


@dataclass
class GpuMatrix:
    segments: tuple[Segment, ...]
    buffers: tuple[Any, ...]
    k: int

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)

    def bindings(self) -> dict[str, Any]:
        return {f"w{i}": b for i, b in enumerate(self.buffers)}


@dataclass(frozen=True)
class Part:
    """Rows of one tensor, optionally reordered (RoPE pair permutation)."""

    tensor: Tensor
    perm: np.ndarray | None = None


def required(get: Callable[[str], Tensor | None]) -> Callable[[str], Tensor]:
    """`get` for tensors a model cannot do without: a missing one is a one-line error."""

    def need(name: str) -> Tensor:
        t = get(name)
        if t is None:
            raise ModelFileError(f"the model has no tensor {name!r}; the file is incomplete or of another architecture")
        return t

    return need


def check_format(t: Tensor) -> str:
    if t.fmt is None or t.fmt not in FORMATS:
        raise ModelFileError(
            f"tensor {t.name!r} has type {t.type_name}, which is not supported "
            f"(supported: {SUPPORTED_TYPES}); use a file quantized to one of those")
    return t.fmt


def upload_matrix(gpu: Gpu, parts: Sequence[Part], label: str,
                  progress: Callable[[int], None] | None = None) -> GpuMatrix:
    k = parts[0].tensor.shape[-1]
    for p in parts:
        if len(p.tensor.shape) != 2 or p.tensor.shape[-1] != k:
            raise ModelFileError(f"tensor {p.tensor.name!r} has shape {p.tensor.shape}, expected (rows, {k})")
        fmt = check_format(p.tensor)
        if (err := FORMATS[fmt].check_k(k, p.tensor.name)):
            raise ModelFileError(err)
    segments: list[Segment] = []
    buffers: list[Any] = []
    i = 0
    while i < len(parts):
        fmt = parts[i].tensor.fmt
        j = i
        while j < len(parts) and parts[j].tensor.fmt == fmt:
            j += 1
        group = parts[i:j]
        rows = [_rows(p) for p in group]
        data = rows[0] if len(rows) == 1 else np.concatenate(rows, axis=0)
        for r0, r1 in _row_chunks(gpu, FORMATS[fmt], data.shape[0], k):
            words = FORMATS[fmt].pack(data[r0:r1], k)
            buffers.append(gpu.upload(words, f"{label}.{len(buffers)}"))
            segments.append(Segment(fmt, r1 - r0))
            if progress:
                progress(words.nbytes)
        i = j
    return GpuMatrix(tuple(segments), tuple(buffers), k)


def upload_experts(gpu: Gpu, tensors: Sequence[Tensor], count: int, label: str,
                   progress: Callable[[int], None] | None = None) -> GpuMatrix:
    """Experts' matrices (each tensor every expert's of one kind: (count, rows, k), or count *
    rows rows) as a matrix whose segments hold one expert's rows each, every expert's in one
    buffer (kernels/linear.py `Experts` picks the chosen ones' rows)."""
    k = tensors[0].shape[-1]
    segments: list[Segment] = []
    buffers: list[Any] = []
    for t in tensors:
        fmt = check_format(t)
        rows = int(np.prod(t.shape[:-1]))
        if t.shape[-1] != k or rows % count:
            raise ModelFileError(f"tensor {t.name!r} has shape {t.shape}, expected {count} experts' rows of {k} values")
        if (err := FORMATS[fmt].check_k(k, t.name)):
            raise ModelFileError(err)
        size = FORMATS[fmt].nbytes(rows, k)
        if size > gpu.max_binding:
            raise ModelFileError(f"tensor {t.name!r} takes {size >> 20} MiB, over this adapter's "
                                 f"{gpu.max_binding >> 20} MiB storage-binding limit (experts are not split)")
        data = _rows(Part(t))
        words = FORMATS[fmt].pack(data.reshape(rows, -1), k)
        buffers.append(gpu.upload(words, f"{label}.{len(buffers)}"))
        segments.append(Segment(fmt, rows // count))
        if progress:
            progress(words.nbytes)
    return GpuMatrix(tuple(segments), tuple(buffers), k)


def f16_copy(gpu: Gpu, m: GpuMatrix, label: str) -> GpuMatrix:
    """`m` with its quantized and bf16 segments as f16 copies, made on the GPU (the direct
    tiles read f16 weights alone); f16 and f32 segments are shared, not copied. A copy is cut
    into buffers within the storage-binding limit, in whole fragments of 16 rows."""
    f16 = FORMATS["f16"]
    segments: list[Segment] = []
    buffers: list[Any] = []
    prog = Program(gpu, f"{label}_f16_copy")
    for seg, buf in zip(m.segments, m.buffers):
        if seg.fmt in ("f16", "f32"):
            segments.append(seg)
            buffers.append(buf)
            continue
        for r0, r1 in _row_chunks(gpu, f16, seg.rows, m.k, whole=16):
            n = r1 - r0
            out = gpu.buffer(f16.nbytes(n, m.k), f"{label}.f16.{len(buffers)}")
            prog.add(f16_copy_kernel(seg.fmt, seg.rows, m.k, r0, n), {"w0": buf, "y": out}, f16_copy_grid(n, m.k))
            segments.append(Segment("f16", n))
            buffers.append(out)
    if prog.dispatches:
        prog.run()
    return GpuMatrix(tuple(segments), tuple(buffers), m.k)


def _rows(p: Part) -> np.ndarray:
    a = p.tensor.data()
    try:
        return a if p.perm is None else a[p.perm]
    except (ValueError, OSError) as e:  # a memory map past the end of a truncated file
        raise ModelFileError(f"tensor {p.tensor.name!r} could not be read: {e}") from e


def _row_chunks(gpu: Gpu, fmt: Any, rows: int, k: int, whole: int = 1) -> list[tuple[int, int]]:
    """Ranges of rows whose bytes in `fmt` fit the storage-binding limit, each (but the last)
    a multiple of `whole` rows."""
    per_row = max(1, fmt.nbytes(1024, k) // 1024)
    step = max(whole, (gpu.max_binding - 4096) // per_row // whole * whole)
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def vector(t: Tensor) -> np.ndarray:
    """A 1-D parameter (norm weight, bias) as float32."""
    fmt = check_format(t)
    a = np.asarray(t.data())
    if fmt == "bf16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32).reshape(-1)


def rope_pair_perm(n_heads: int, head_dim: int, rope_dim: int = 0) -> np.ndarray:
    """Row order that puts rotate-half partners (i, i + r/2) of each head side by side, for the
    first r = `rope_dim` dims of a head (all by default; the rest are not rotated, and stay)."""
    r = rope_dim or head_dim
    half = r // 2
    one = np.arange(head_dim, dtype=np.int64)
    one[0:r:2] = np.arange(half)
    one[1:r:2] = np.arange(half) + half
    return (np.arange(n_heads)[:, None] * head_dim + one[None, :]).reshape(-1)


def _a4(n: int) -> int:
    return -(-n // 4) * 4


def _padded(a: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    out[: len(a)] = a
    return out


@dataclass(frozen=True)
class ParamLayout:
    """Float offsets in a layer's parameter buffer: [attn_norm | ffn_norm | qkv bias | rope
    inv_freq | q_norm | k_norm | attention output norm | FFN output norm], each part padded to
    4 floats (kernels read it as vec4s); the parts after RoPE's only where the architecture has
    them (offset 0 otherwise)."""

    ffn: int
    bias: int
    rope: int
    size: int
    q_norm: int = 0
    k_norm: int = 0
    attn_post: int = 0
    ffn_post: int = 0
    o_bias: int = 0  # gpt-oss: the output projection's bias, the heads' sinks, the router's
    sinks: int = 0  # bias, each expert's gate|up biases and down biases
    router_bias: int = 0
    gate_up_bias: int = 0
    down_bias: int = 0

    @classmethod
    def of(cls, c: ModelConfig) -> ParamLayout:
        a = c.architecture
        ffn = _a4(c.hidden)
        bias = ffn + _a4(c.hidden)
        rope = bias + (_a4(c.q_dim + 2 * c.kv_dim) if c.qkv_bias else 0)
        end = rope + _a4(c.head_dim // 2)
        q_norm = k_norm = attn_post = ffn_post = 0
        if a.qk_norm:
            q_norm, k_norm, end = end, end + _a4(c.head_dim), end + 2 * _a4(c.head_dim)
        if a.post_norms:
            attn_post, ffn_post, end = end, end + _a4(c.hidden), end + 2 * _a4(c.hidden)
        o_bias = sinks = router_bias = gate_up_bias = down_bias = 0
        if a.o_bias:
            o_bias, end = end, end + _a4(c.hidden)
        if a.sinks:
            sinks, end = end, end + _a4(c.n_heads)
        if a.moe is not None and a.moe.bias:
            m = a.moe
            router_bias, gate_up_bias = end, end + _a4(m.count)
            down_bias = gate_up_bias + _a4(m.count * 2 * m.ffn)
            end = down_bias + _a4(m.count * c.hidden)
        return cls(ffn, bias, rope, end, q_norm, k_norm, attn_post, ffn_post, o_bias, sinks, router_bias,
                   gate_up_bias, down_bias)


@dataclass
class LayerWeights:
    qkv: GpuMatrix
    o: GpuMatrix
    gate_up: GpuMatrix  # in a mixture-of-experts layer: every expert's (upload_experts)
    down: GpuMatrix
    params: Any  # the layer's vectors (ParamLayout)
    router: GpuMatrix | None = None  # a mixture-of-experts layer's router (one row an expert)


@dataclass
class ModelWeights:
    """A decoder's weights on the GPU."""

    embedding: GpuMatrix
    lm_head: GpuMatrix  # the embedding itself where they are tied
    output_norm: Any
    layers: list[LayerWeights]
    layout: ParamLayout
    rope_ctx: int = 0  # the context the layers' RoPE frequencies were chosen for (LongRoPE's short or long)

    @property
    def all_f32(self) -> bool:
        """Every matrix is stored in f32 (a reference model's: the KV cache stays f32 then)."""
        mats = [self.embedding, self.lm_head, *(m for L in self.layers for m in (L.qkv, L.o, L.gate_up, L.down))]
        return all(s.fmt == "f32" for m in mats for s in m.segments)

    def fit_rope(self, gpu: Gpu, c: ModelConfig, ctx: int) -> None:
        """Rewrite the layers' RoPE frequencies for a context of `ctx` positions where that
        changes them (LongRoPE takes its long factors past the original context)."""
        if not c.long_rope or (c.inv_freq(0, ctx) == c.inv_freq(0, self.rope_ctx)).all():
            return
        for i, L in enumerate(self.layers):
            gpu.write(L.params, c.inv_freq(i, ctx), self.layout.rope * 4)
        self.rope_ctx = ctx


def upload_weights(gpu: Gpu, c: ModelConfig, get: Callable[[str], Tensor | None],
                   progress: Callable[[int], None] | None = None, ctx: int = 0) -> ModelWeights:
    """Upload a decoder's tensors (GGUF names) in their own formats; Q and K rows are
    reordered so that RoPE's rotate-half partners lie side by side. RoPE's frequencies are
    those of a context of `ctx` positions (see `ModelWeights.fit_rope`)."""

    need = required(get)

    a = c.architecture
    lay = ParamLayout.of(c)
    qperm = rope_pair_perm(c.n_heads, c.head_dim, c.rope_dim) if c.rope_neox else None
    kperm = rope_pair_perm(c.n_kv_heads, c.head_dim, c.rope_dim) if c.rope_neox else None
    hperm = rope_pair_perm(1, c.head_dim, c.rope_dim) if c.rope_neox else np.arange(c.head_dim)

    def norm(name: str) -> np.ndarray:
        return vector(need(name)) + np.float32(a.norm_shift)

    embedding = upload_matrix(gpu, [Part(need("token_embd.weight"))], "token_embd", progress)
    out = None if c.tie_embeddings else get("output.weight")
    lm_head = embedding if out is None else upload_matrix(gpu, [Part(out)], "output", progress)
    output_norm = gpu.upload(_padded(norm("output_norm.weight"), _a4(c.hidden)), "output_norm")
    layers: list[LayerWeights] = []
    for i in range(c.n_layers):
        b = f"blk.{i}."
        fused_qkv = get(b + "attn_qkv.weight")
        if fused_qkv is not None:  # Phi-3: one tensor of Q, K and V rows
            q, kv = c.q_dim, c.kv_dim
            rows = np.concatenate([np.arange(q) if qperm is None else qperm, q + (np.arange(kv) if kperm is None else kperm),
                                   q + kv + np.arange(kv)])
            qkv = upload_matrix(gpu, [Part(fused_qkv, rows)], b + "qkv", progress)
        else:
            qkv = upload_matrix(gpu, [Part(need(b + "attn_q.weight"), qperm), Part(need(b + "attn_k.weight"), kperm),
                                      Part(need(b + "attn_v.weight"))], b + "qkv", progress)
        pv = np.zeros(lay.size, np.float32)
        pv[: c.hidden] = norm(b + "attn_norm.weight")
        # (gpt-oss's GGUF names the pre-FFN norm post_attention_norm)
        ffn_norm = b + ("ffn_norm.weight" if a.post_norms or get(b + "ffn_norm.weight") else "post_attention_norm.weight")
        pv[lay.ffn: lay.ffn + c.hidden] = norm(ffn_norm)
        if a.o_bias:
            pv[lay.o_bias: lay.o_bias + c.hidden] = vector(need(b + "attn_output.bias"))
        if a.sinks:
            sinks = get(b + "attn_sinks.weight") or need(b + "attn_sinks")
            pv[lay.sinks: lay.sinks + c.n_heads] = vector(sinks)
        if (m := a.experts(i)) is not None and m.bias:  # gate|up per expert, as the epilogue reads them
            pv[lay.router_bias: lay.router_bias + m.count] = vector(need(b + "ffn_gate_inp.bias"))
            gb = vector(need(b + "ffn_gate_exps.bias")).reshape(m.count, m.ffn)
            ub = vector(need(b + "ffn_up_exps.bias")).reshape(m.count, m.ffn)
            pv[lay.gate_up_bias: lay.gate_up_bias + 2 * m.count * m.ffn] = np.concatenate([gb, ub], axis=1).reshape(-1)
            pv[lay.down_bias: lay.down_bias + m.count * c.hidden] = vector(need(b + "ffn_down_exps.bias"))
        if a.qk_norm:
            pv[lay.q_norm: lay.q_norm + c.head_dim] = norm(b + "attn_q_norm.weight")[hperm]
            pv[lay.k_norm: lay.k_norm + c.head_dim] = norm(b + "attn_k_norm.weight")[hperm]
        if a.post_norms:
            pv[lay.attn_post: lay.attn_post + c.hidden] = norm(b + "post_attention_norm.weight")
            pv[lay.ffn_post: lay.ffn_post + c.hidden] = norm(b + "post_ffw_norm.weight")
        if c.qkv_bias:
            bq, bk = vector(need(b + "attn_q.bias")), vector(need(b + "attn_k.bias"))
            if qperm is not None and kperm is not None:
                bq, bk = bq[qperm], bk[kperm]
            pv[lay.bias: lay.bias + c.q_dim + 2 * c.kv_dim] = np.concatenate([bq, bk, vector(need(b + "attn_v.bias"))])
        pv[lay.rope: lay.rope + c.head_dim // 2] = c.inv_freq(i, ctx)
        o = upload_matrix(gpu, [Part(need(b + "attn_output.weight"))], b + "o", progress)
        if (moe := a.experts(i)) is not None:
            layers.append(LayerWeights(
                qkv=qkv, o=o, params=gpu.upload(pv, b + "params"),
                router=upload_matrix(gpu, [Part(need(b + "ffn_gate_inp.weight"))], b + "router", progress),
                gate_up=upload_experts(gpu, [need(b + "ffn_gate_exps.weight"), need(b + "ffn_up_exps.weight")],
                                       moe.count, b + "gate_up", progress),
                down=upload_experts(gpu, [need(b + "ffn_down_exps.weight")], moe.count, b + "down", progress)))
            continue
        gate = get(b + "ffn_gate.weight")  # none where ffn_up holds gate and up (Phi-3)
        gate_up = [Part(need(b + "ffn_up.weight"))] if gate is None else [Part(gate), Part(need(b + "ffn_up.weight"))]
        layers.append(LayerWeights(
            qkv=qkv,
            o=o,
            gate_up=upload_matrix(gpu, gate_up, b + "gate_up", progress),
            down=upload_matrix(gpu, [Part(need(b + "ffn_down.weight"))], b + "down", progress),
            params=gpu.upload(pv, b + "params"),
        ))
    w = ModelWeights(embedding, lm_head, output_norm, layers, lay, ctx)
    _check_shapes(c, w)
    return w


def _check_shapes(c: ModelConfig, w: ModelWeights) -> None:
    for i, L in enumerate(w.layers):
        moe = c.architecture.experts(i)
        ffn = moe.ffn if moe else c.intermediate  # an expert's rows
        want = {"qkv": (c.q_dim + 2 * c.kv_dim, c.hidden), "o": (c.hidden, c.q_dim),
                "gate_up": (2 * ffn, c.hidden), "down": (c.hidden, ffn)}
        if moe and L.router is not None:
            want["router"] = (moe.count, c.hidden)
        for name, (rows, k) in want.items():
            m: GpuMatrix = getattr(L, name)
            if (m.rows, m.k) != (rows, k):
                raise ModelFileError(f"layer {i} {name} weights are {m.rows}x{m.k}, the config says {rows}x{k}")
    if w.embedding.k != c.hidden or w.lm_head.k != c.hidden:
        raise ModelFileError("embedding width does not match the hidden size")
