"""Real model shapes with seeded random weights, for benchmarks (speed does not depend on
the values). Weights are generated on the machine that runs them: nothing to download."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import UserError
from ..kernels.formats import FORMATS
from .config import Architecture, ModelConfig, Moe


def _gemma(hidden: int, head_dim: int, **kw: Any) -> Architecture:
    """What Gemma 2 and 3 share: output norms, GeGLU, scaled embeddings, 1/sqrt(head_dim) scores."""
    return Architecture(post_norms=True, act="gelu_tanh", embed_scale=hidden ** 0.5, attn_scale=head_dim ** -0.5, **kw)


def _gemma3(n_layers: int, hidden: int, window: int, head_dim: int) -> Architecture:
    """Gemma 3's layers as its GGUF files describe them: five local layers (sliding window,
    RoPE base 10000) to a global one, q/k norms."""
    return _gemma(hidden, head_dim, qk_norm=True, local_rope_theta=1e4,
                  windows=tuple(window if (i + 1) % 6 else 0 for i in range(n_layers)))


def _gemma2(n_layers: int, hidden: int, window: int, head_dim: int) -> Architecture:
    """Gemma 2's layers: sliding-window and global layers alternating (the first local), the
    attention scores and logits soft-capped."""
    return _gemma(hidden, head_dim, attn_softcap=50.0, final_softcap=30.0,
                  windows=tuple(window if i % 2 == 0 else 0 for i in range(n_layers)))


def _longrope(rope_dim: int, orig: int, seed: int = 0) -> dict[str, Any]:
    """LongRoPE scaling with seeded factors of the range real files have (short near 1, long up
    to ~40), one per rotated pair; the attention factor follows from the context lengths."""
    rng = np.random.default_rng(10_000 + seed)
    return {"rope_type": "longrope", "original_max_position_embeddings": orig,
            "short_factor": np.round(rng.uniform(1.0, 2.0, rope_dim // 2), 4).tolist(),
            "long_factor": np.round(rng.uniform(1.0, 40.0, rope_dim // 2), 4).tolist()}


PRESETS: dict[str, dict[str, Any]] = {
    # a small model for quick runs on software adapters (CI's llvmpipe)
    "tiny": dict(arch="llama", n_layers=4, hidden=256, intermediate=512, n_heads=4, n_kv_heads=2,
                 head_dim=64, vocab=4096, max_ctx=2048, rms_eps=1e-5, rope_theta=1e4,
                 tie_embeddings=True, qkv_bias=False),
    "qwen2.5-0.5b": dict(arch="qwen2", n_layers=24, hidden=896, intermediate=4864, n_heads=14, n_kv_heads=2,
                         head_dim=64, vocab=151936, max_ctx=32768, rms_eps=1e-6, rope_theta=1e6,
                         tie_embeddings=True, qkv_bias=True),
    "qwen2.5-1.5b": dict(arch="qwen2", n_layers=28, hidden=1536, intermediate=8960, n_heads=12, n_kv_heads=2,
                         head_dim=128, vocab=151936, max_ctx=32768, rms_eps=1e-6, rope_theta=1e6,
                         tie_embeddings=True, qkv_bias=True),
    "llama-3.2-1b": dict(arch="llama", n_layers=16, hidden=2048, intermediate=8192, n_heads=32, n_kv_heads=8,
                         head_dim=64, vocab=128256, max_ctx=131072, rms_eps=1e-5, rope_theta=5e5,
                         tie_embeddings=True, qkv_bias=False),
    "smollm2-135m": dict(arch="llama", n_layers=30, hidden=576, intermediate=1536, n_heads=9, n_kv_heads=3,
                         head_dim=64, vocab=49152, max_ctx=8192, rms_eps=1e-5, rope_theta=1e5,
                         tie_embeddings=True, qkv_bias=False),
    # per-head q/k norms; q 2048 wide on a 1024-wide residual
    "qwen3-0.6b": dict(arch="qwen3", n_layers=28, hidden=1024, intermediate=3072, n_heads=16, n_kv_heads=8,
                       head_dim=128, vocab=151936, max_ctx=40960, rms_eps=1e-6, rope_theta=1e6,
                       tie_embeddings=True, qkv_bias=False, architecture=Architecture(qk_norm=True)),
    "qwen3-1.7b": dict(arch="qwen3", n_layers=28, hidden=2048, intermediate=6144, n_heads=16, n_kv_heads=8,
                       head_dim=128, vocab=151936, max_ctx=40960, rms_eps=1e-6, rope_theta=1e6,
                       tie_embeddings=True, qkv_bias=False, architecture=Architecture(qk_norm=True)),
    # no RoPE in every 4th layer (NoPE), as llama.cpp reads a smollm3 file
    "smollm3-3b": dict(arch="smollm3", n_layers=36, hidden=2048, intermediate=11008, n_heads=16, n_kv_heads=4,
                       head_dim=128, vocab=128256, max_ctx=65536, rms_eps=1e-6, rope_theta=5e6,
                       tie_embeddings=True, qkv_bias=False,
                       architecture=Architecture(rope_layers=tuple((i + 1) % 4 != 0 for i in range(36)))),
    # heads of 256, one KV head, windows of 512 keys in 5 of every 6 layers, a 262k vocabulary
    "gemma-3-1b": dict(arch="gemma3", n_layers=26, hidden=1152, intermediate=6912, n_heads=4, n_kv_heads=1,
                       head_dim=256, vocab=262144, max_ctx=32768, rms_eps=1e-6, rope_theta=1e6,
                       tie_embeddings=True, qkv_bias=False, architecture=_gemma3(26, 1152, 512, 256)),
    # heads of 256, windows of 4096 keys in every other layer, soft-capped scores and logits
    "gemma-2-2b": dict(arch="gemma2", n_layers=26, hidden=2304, intermediate=9216, n_heads=8, n_kv_heads=4,
                       head_dim=256, vocab=256000, max_ctx=8192, rms_eps=1e-6, rope_theta=1e4,
                       tie_embeddings=True, qkv_bias=False, architecture=_gemma2(26, 2304, 4096, 256)),
    # fused QKV and gate/up matrices, 96 of 128 dims rotated, LongRoPE (Phi-4-mini)
    "phi-4-mini": dict(arch="phi3", n_layers=32, hidden=3072, intermediate=8192, n_heads=24, n_kv_heads=8,
                       head_dim=128, vocab=200064, max_ctx=131072, rms_eps=1e-5, rope_theta=1e4,
                       tie_embeddings=True, qkv_bias=False, rope_scaling=_longrope(96, 4096),
                       architecture=Architecture(rope_dim=96)),
    # 128 experts of 768, 8 a token: ~3.3B of 30.5B parameters read per token
    "qwen3-30b-a3b": dict(arch="qwen3moe", n_layers=48, hidden=2048, intermediate=6144, n_heads=32, n_kv_heads=4,
                          head_dim=128, vocab=151936, max_ctx=40960, rms_eps=1e-6, rope_theta=1e6,
                          tie_embeddings=False, qkv_bias=False,
                          architecture=Architecture(qk_norm=True, moe=Moe(128, 8, 768))),
    # 32 experts of 2880, 4 a token, MXFP4 experts beside f16 attention in its files (--dtype mxfp4)
    "gpt-oss-20b": dict(arch="gpt-oss", n_layers=24, hidden=2880, intermediate=2880, n_heads=64, n_kv_heads=8,
                        head_dim=64, vocab=201088, max_ctx=131072, rms_eps=1e-5, rope_theta=150000.0,
                        tie_embeddings=False, qkv_bias=True,
                        rope_scaling={"rope_type": "yarn", "factor": 32.0, "original_max_position_embeddings": 4096,
                                      "truncate": True},
                        architecture=Architecture(act="swiglu_oai", sinks=True, o_bias=True,
                                                  moe=Moe(32, 4, 2880, bias=True),
                                                  windows=tuple(128 if i % 2 == 0 else 0 for i in range(24)))),
    # small models of the other layouts for quick runs on software adapters: per-head q/k norms,
    # a mixture, Gemma 3's output norms and windows
    "tiny-qwen3": dict(arch="qwen3", n_layers=2, hidden=256, intermediate=512, n_heads=4, n_kv_heads=2,
                       head_dim=64, vocab=4096, max_ctx=2048, rms_eps=1e-6, rope_theta=1e6,
                       tie_embeddings=True, qkv_bias=False, architecture=Architecture(qk_norm=True)),
    "tiny-gemma3": dict(arch="gemma3", n_layers=2, hidden=256, intermediate=512, n_heads=4, n_kv_heads=1,
                        head_dim=64, vocab=4096, max_ctx=2048, rms_eps=1e-6, rope_theta=1e6,
                        tie_embeddings=True, qkv_bias=False, architecture=_gemma3(2, 256, 8, 64)),
    "tiny-moe": dict(arch="qwen3moe", n_layers=2, hidden=256, intermediate=512, n_heads=4, n_kv_heads=2,
                     head_dim=64, vocab=4096, max_ctx=2048, rms_eps=1e-6, rope_theta=1e6,
                     tie_embeddings=True, qkv_bias=False, architecture=Architecture(qk_norm=True, moe=Moe(8, 2, 128))),
    # 8 experts of 14336, 2 a token: ~13B of 47B parameters read per token (GGUF "llama" with experts)
    "mixtral-8x7b": dict(arch="llama", n_layers=32, hidden=4096, intermediate=14336, n_heads=32, n_kv_heads=8,
                         head_dim=128, vocab=32000, max_ctx=32768, rms_eps=1e-5, rope_theta=1e6,
                         tie_embeddings=False, qkv_bias=False, architecture=Architecture(moe=Moe(8, 2, 14336))),
}
DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k",
          "q2_k", "q3_k", "iq4_nl", "iq4_xs", "mxfp4")
# The type llama.cpp's quantizer writes a matrix in when its rows are not a multiple of the
# requested type's 256-value super-block (llama-quant.cpp), f16 where that one does not fit
# either: Qwen2.5-0.5B's 896-wide rows, for instance, are never Q4_K or Q3_K in a file.
FALLBACK = {"q2_k": "iq4_nl", "q3_k": "iq4_nl", "iq4_xs": "iq4_nl", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}


def file_type(dtype: str, k: int) -> str:
    """The type a (rows, k) matrix of a `dtype` model file has (see FALLBACK)."""
    if k % FORMATS[dtype].block == 0:
        return dtype
    fallback = FALLBACK.get(dtype, "f16")
    return fallback if k % FORMATS[fallback].block == 0 else "f16"



def random_weight(fmt: str, rows: int, k: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Random file data of a (rows, k) weight in `fmt`: floats, or the rows' raw block bytes.

    Block scales are kept small and finite so that the products stay well conditioned.
    """
    f = FORMATS[fmt]
    if fmt == "f32":
        return (rng.standard_normal((rows, k)) * scale).astype(np.float32)
    if fmt == "f16":
        return (rng.standard_normal((rows, k)) * scale).astype(np.float16)
    if fmt == "bf16":
        w = (rng.standard_normal((rows, k)) * scale).astype(np.float32)
        return (w.view(np.uint32) >> 16).astype(np.uint16)
    nb = rows * k // f.block
    raw = rng.integers(0, 256, size=(nb, f.block_bytes), dtype=np.uint8)
    half = lambda a: np.asarray(a, np.float16).view(np.uint8).reshape(nb, 2)  # noqa: E731
    d = rng.uniform(0.5, 1.0, nb) * scale
    if fmt in ("q8_0",):
        raw[:, 0:2] = half(d / 127)
    elif fmt in ("q4_0", "q5_0"):
        raw[:, 0:2] = half(d / 8)
    elif fmt in ("q4_1", "q5_1"):
        raw[:, 0:2] = half(d / 8)
        raw[:, 2:4] = half(-d)
    elif fmt in ("q4_k", "q5_k"):
        raw[:, 0:2] = half(d / 512)
        raw[:, 2:4] = half(d / 512)
    elif fmt == "q6_k":
        raw[:, 208:210] = half(d / 2048)
    elif fmt == "q2_k":  # d * (0..15) * (0..3) - dmin * (0..15)
        raw[:, 80:82] = half(d / 32)
        raw[:, 82:84] = half(d / 64)
    elif fmt == "q3_k":  # d * (-32..31) * (-4..3)
        raw[:, 108:110] = half(d / 128)
    elif fmt == "iq4_nl":  # d * (-127..113)
        raw[:, 0:2] = half(d / 128)
    elif fmt == "iq4_xs":  # d * (-32..31) * (-127..113)
        raw[:, 0:2] = half(d / 4096)
    elif fmt == "mxfp4":  # 2^(e - 128) * (-12..12): the power of two nearest d / 12
        raw[:, 0] = np.clip(np.round(np.log2(d / 12)) + 128, 2, 254).astype(np.uint8)
    return raw.reshape(rows, -1)


@dataclass
class RandomTensor:
    """Quacks like a file tensor (name, fmt, type_name, shape, nbytes, data())."""

    name: str
    fmt: str
    shape: tuple[int, ...]
    make: Callable[[], np.ndarray]

    @property
    def type_name(self) -> str:
        return self.fmt.upper()

    @property
    def nbytes(self) -> int:
        if len(self.shape) == 1:
            return self.shape[0] * 4
        return FORMATS[self.fmt].nbytes(int(np.prod(self.shape[:-1])), self.shape[-1])

    def data(self) -> np.ndarray:
        return self.make()


def _tiled_weight(fmt: str, rows: int, k: int, seed: int, tile: int = 64, scale: float = 0.02) -> np.ndarray:
    """A (rows, k) weight built by tiling a random block of `tile` rows (0: every row drawn):
    fast for 100M+ values, but heads, experts and vocabulary rows repeat every `tile` rows."""
    rng = np.random.default_rng(seed)
    block = random_weight(fmt, min(rows, tile or rows), k, rng, scale=scale)
    reps = -(-rows // block.shape[0])
    return np.tile(block, (reps, 1))[:rows]


def preset_model(name: str, dtype: str, seed: int = 0, n_layers: int = 0, vocab: int = 0,
                 experts: int = 0, tile: int = 64, qk_gain: float = 1.0,
                 window: int = 0) -> tuple[ModelConfig, dict[str, RandomTensor]]:
    """A preset's config and seeded random tensors; `n_layers`, `vocab` and `experts` (where not
    0) cut the model to its first layers, a smaller vocabulary and fewer experts (no more used a
    token than there are), the layers' shapes kept (quick runs on software adapters); `window`
    shortens the sliding windows to that many keys (so that a short prompt runs past them). Matrices
    repeat a random block of `tile` rows (fast to build); `tile=0` draws every row, so that no
    two heads, experts or tokens share weights (for comparisons with other engines). `qk_gain`
    scales the query and key weights: at the default scale a random model's attention is nearly
    uniform, so positions (RoPE, windows) barely change its logits; a gain of 4 makes it sharp."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    if dtype not in DTYPES:
        raise UserError(f"unknown weight type {dtype!r}: choose one of {', '.join(DTYPES)}")
    p = dict(PRESETS[name])
    if n_layers:
        a = p.get("architecture", Architecture())
        p.update(n_layers=n_layers, architecture=replace(a, windows=a.windows[:n_layers],
                                                         rope_layers=a.rope_layers[:n_layers]))
    if vocab:
        p.update(vocab=vocab)
    if window:
        a = p.get("architecture", Architecture())
        p.update(architecture=replace(a, windows=tuple(min(w, window) if w else 0 for w in a.windows)))
    if experts:
        a = p.get("architecture", Architecture())
        if a.moe is None:
            raise UserError(f"preset {name!r} has no experts to cut")
        p.update(architecture=replace(a, moe=replace(a.moe, count=experts, used=min(a.moe.used, experts))))
    cfg = ModelConfig(name=f"{name} ({dtype}, random)", rope_neox=False, **p)
    c = cfg
    tensors: dict[str, RandomTensor] = {}
    counter = iter(range(1 << 30))

    def mat(tname: str, rows: int, k: int, experts: int = 0, fmt: str | None = None) -> None:
        """A (rows, k) matrix, or with `experts` that many of them as one (experts, rows, k)."""
        gain = qk_gain if tname.endswith(("attn_q.weight", "attn_k.weight")) else 1.0
        fused(tname, ((rows, gain),), k, experts, fmt)

    def fused(tname: str, parts: tuple[tuple[int, float], ...], k: int, experts: int = 0,
              fmt: str | None = None) -> None:
        """One matrix of stacked parts (rows, gain), each drawn apart (Phi-3's QKV, gate/up)."""
        seeds = [seed * 1000 + next(counter) for _ in parts]
        # MXFP4 is an expert format: llama.cpp writes the other matrices of such files in f16
        fmt = fmt or file_type("f16" if dtype == "mxfp4" and not experts else dtype, k)
        rows = sum(r for r, _ in parts)
        shape = (experts, rows, k) if experts else (rows, k)
        n = max(experts, 1)

        def make() -> np.ndarray:  # each expert's rows are its parts' rows in turn
            blocks = [_tiled_weight(fmt, n * r, k, s, tile, 0.02 * g).reshape(n, r, -1) for (r, g), s in zip(parts, seeds)]
            return np.concatenate(blocks, axis=1).reshape(n * rows, -1)

        tensors[tname] = RandomTensor(tname, fmt, shape, make)

    def vec(tname: str, n: int, value: float | None = None) -> None:
        s = seed * 1000 + next(counter)

        def make() -> np.ndarray:
            if value is not None:
                return np.full(n, value, np.float32)
            return (np.random.default_rng(s).standard_normal(n) * 0.02).astype(np.float32)

        tensors[tname] = RandomTensor(tname, "f32", (n,), make)

    mat("token_embd.weight", c.vocab, c.hidden)
    vec("output_norm.weight", c.hidden, 1.0)
    if c.long_rope:  # as llama.cpp's converter writes LongRoPE's factors: two global vectors
        for kind in ("long", "short"):
            f = np.asarray(c.rope_scaling[f"{kind}_factor"], np.float32)  # type: ignore[index]
            tensors[f"rope_factors_{kind}.weight"] = RandomTensor(f"rope_factors_{kind}.weight", "f32", f.shape,
                                                                  lambda f=f: f)
    if not c.tie_embeddings:
        mat("output.weight", c.vocab, c.hidden)
    a = c.architecture
    for i in range(c.n_layers):
        b = f"blk.{i}."
        vec(b + "attn_norm.weight", c.hidden, 1.0)
        # llama.cpp's converter names gpt-oss's pre-FFN norm post_attention_norm (llama.cpp requires it)
        vec(b + ("post_attention_norm.weight" if c.arch == "gpt-oss" else "ffn_norm.weight"), c.hidden, 1.0)
        if a.qk_norm:
            vec(b + "attn_q_norm.weight", c.head_dim, 1.0)
            vec(b + "attn_k_norm.weight", c.head_dim, 1.0)
        if a.post_norms:
            vec(b + "post_attention_norm.weight", c.hidden, 1.0)
            vec(b + "post_ffw_norm.weight", c.hidden, 1.0)
        if c.arch == "phi3":  # llama.cpp's phi3 reads q, k and v as one matrix, gate and up as another
            fused(b + "attn_qkv.weight", ((c.q_dim, qk_gain), (c.kv_dim, qk_gain), (c.kv_dim, 1.0)), c.hidden)
        else:
            mat(b + "attn_q.weight", c.q_dim, c.hidden)
            mat(b + "attn_k.weight", c.kv_dim, c.hidden)
            mat(b + "attn_v.weight", c.kv_dim, c.hidden)
        if c.qkv_bias:
            vec(b + "attn_q.bias", c.q_dim)
            vec(b + "attn_k.bias", c.kv_dim)
            vec(b + "attn_v.bias", c.kv_dim)
        mat(b + "attn_output.weight", c.hidden, c.q_dim)
        if a.o_bias:
            vec(b + "attn_output.bias", c.hidden)
        if a.sinks:
            vec(b + "attn_sinks.weight", c.n_heads)
        if (m := a.experts(i)) is not None:  # the router in f32, as llama.cpp's converter keeps it
            mat(b + "ffn_gate_inp.weight", m.count, c.hidden, fmt="f32")
            if m.bias:
                vec(b + "ffn_gate_inp.bias", m.count)
                vec(b + "ffn_gate_exps.bias", m.count * m.ffn)
                vec(b + "ffn_up_exps.bias", m.count * m.ffn)
                vec(b + "ffn_down_exps.bias", m.count * c.hidden)
            mat(b + "ffn_gate_exps.weight", m.ffn, c.hidden, m.count)
            mat(b + "ffn_up_exps.weight", m.ffn, c.hidden, m.count)
            mat(b + "ffn_down_exps.weight", c.hidden, m.ffn, m.count)
            continue
        if c.arch == "phi3":
            fused(b + "ffn_up.weight", ((c.intermediate, 1.0), (c.intermediate, 1.0)), c.hidden)
        else:
            mat(b + "ffn_gate.weight", c.intermediate, c.hidden)
            mat(b + "ffn_up.weight", c.intermediate, c.hidden)
        mat(b + "ffn_down.weight", c.hidden, c.intermediate)
    return cfg, tensors


def weight_bytes_per_token(tensors: dict[str, Any], tied: bool, moe: Moe | None = None) -> int:
    """Bytes of weights one decode step reads: every matrix once (the embedding is only one
    row unless it doubles as the LM head), of a mixture's experts only the chosen ones."""
    total = 0
    for name, t in tensors.items():
        if name == "token_embd.weight" and not tied:
            continue
        share = moe.used / moe.count if moe is not None and "_exps." in name else 1.0
        total += int(t.nbytes * share)
    return total


def weight_bytes(tensors: dict[str, Any]) -> int:
    """Bytes of all the weights (what loading the model needs of GPU memory, near enough)."""
    return sum(int(t.nbytes) for t in tensors.values())
