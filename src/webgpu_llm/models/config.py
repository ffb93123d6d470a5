"""Model hyper-parameters, normalised from GGUF metadata or a Hugging Face config.json."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelFileError

SUPPORTED_ARCHS = ("llama", "qwen2")


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    name: str
    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab: int
    max_ctx: int
    rms_eps: float
    rope_theta: float
    tie_embeddings: bool
    qkv_bias: bool
    # Stored Q/K weights expect rotate-half RoPE (Hugging Face, GGUF qwen2) rather than the
    # adjacent-pair RoPE of GGUF llama files; the loader permutes rows to adjacent pairs.
    rope_neox: bool
    rope_scaling: dict[str, Any] | None = None
    rope_freq_factors: np.ndarray | None = field(default=None, compare=False)

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def inv_freq(self) -> np.ndarray:
        """RoPE inverse frequency of each of the head_dim/2 pairs, with scaling applied."""
        d = self.head_dim
        inv = 1.0 / (self.rope_theta ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d)))
        inv = inv.astype(np.float32)
        if self.rope_freq_factors is not None:
            return (inv / self.rope_freq_factors.astype(np.float32)).astype(np.float32)
        sc = self.rope_scaling or {}
        kind = sc.get("rope_type", sc.get("type"))
        if kind in (None, "default"):
            return inv
        if kind == "linear":
            return (inv / np.float32(sc["factor"])).astype(np.float32)
        if kind == "llama3":
            return _llama3_inv_freq(inv, sc)
        raise ModelFileError(f"RoPE scaling {kind!r} is not supported (supported: linear, llama3)")

    def check(self) -> None:
        if self.arch not in SUPPORTED_ARCHS:
            raise ModelFileError(
                f"architecture {self.arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")
        problems = []
        if self.n_heads % self.n_kv_heads:
            problems.append(f"{self.n_heads} heads are not a multiple of {self.n_kv_heads} KV heads")
        if self.head_dim % 4 or self.head_dim > 256:
            problems.append(f"head size {self.head_dim} (need a multiple of 4, at most 256)")
        for what, v in (("hidden size", self.hidden), ("feed-forward size", self.intermediate)):
            if v % 4:
                problems.append(f"{what} {v} (need a multiple of 4)")
        if problems:
            raise ModelFileError("unsupported model shape: " + "; ".join(problems))


def _llama3_inv_freq(inv: np.ndarray, sc: dict[str, Any]) -> np.ndarray:
    factor = float(sc["factor"])
    lo, hi = float(sc.get("low_freq_factor", 1.0)), float(sc.get("high_freq_factor", 4.0))
    old = float(sc.get("original_max_position_embeddings", 8192))
    inv64 = inv.astype(np.float64)
    wavelen = 2 * math.pi / inv64
    out = np.where(wavelen > old / lo, inv64 / factor, inv64)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
    return np.where(medium, smoothed, out).astype(np.float32)


def _need(md: dict[str, Any], key: str, src: str) -> Any:
    if key not in md:
        raise ModelFileError(f"{src}: missing metadata key {key!r}; the file is incomplete or not a supported model")
    return md[key]


def config_from_gguf(md: dict[str, Any], tensors: dict[str, Any], src: str) -> ModelConfig:
    arch = str(_need(md, "general.architecture", src))
    if arch not in SUPPORTED_ARCHS:
        raise ModelFileError(f"{src}: architecture {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")

    def g(key: str, default: Any = None) -> Any:
        full = f"{arch}.{key}"
        return md.get(full, default) if default is not None else _need(md, full, src)

    n_heads = int(g("attention.head_count"))
    hidden = int(g("embedding_length"))
    kv = g("attention.head_count_kv", n_heads)
    emb = tensors.get("token_embd.weight")
    if emb is None:
        raise ModelFileError(f"{src}: no tensor 'token_embd.weight'; not a supported model file")
    head_dim = int(g("attention.key_length", hidden // n_heads))
    rope_dim = int(g("rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise ModelFileError(f"{src}: partial rotary embeddings ({rope_dim} of {head_dim}) are not supported")
    scaling = None
    stype = g("rope.scaling.type", "none")
    if stype not in ("none", ""):
        scaling = {"rope_type": stype, "factor": float(g("rope.scaling.factor", 1.0))}
    factors = tensors.get("rope_freqs.weight")
    cfg = ModelConfig(
        arch=arch,
        name=str(md.get("general.name", src)),
        n_layers=int(g("block_count")),
        hidden=hidden,
        intermediate=int(g("feed_forward_length")),
        n_heads=n_heads,
        n_kv_heads=int(kv if not isinstance(kv, list) else kv[0]),
        head_dim=head_dim,
        vocab=int(emb.shape[0]),
        max_ctx=int(g("context_length", 4096)),
        rms_eps=float(g("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(g("rope.freq_base", 10000.0)),
        tie_embeddings="output.weight" not in tensors,
        qkv_bias="blk.0.attn_q.bias" in tensors,
        rope_neox=arch == "qwen2",
        rope_scaling=scaling,
        rope_freq_factors=np.array(factors.data(), np.float32) if factors is not None else None,
    )
    cfg.check()
    return cfg


def config_from_hf(c: dict[str, Any], src: str) -> ModelConfig:
    arch = str(c.get("model_type", "?"))
    if arch not in SUPPORTED_ARCHS:
        raise ModelFileError(f"{src}: model_type {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")
    n_heads = int(_need(c, "num_attention_heads", src))
    hidden = int(_need(c, "hidden_size", src))
    cfg = ModelConfig(
        arch=arch,
        name=str(c.get("_name_or_path") or src),
        n_layers=int(_need(c, "num_hidden_layers", src)),
        hidden=hidden,
        intermediate=int(_need(c, "intermediate_size", src)),
        n_heads=n_heads,
        n_kv_heads=int(c.get("num_key_value_heads") or n_heads),
        head_dim=int(c.get("head_dim") or hidden // n_heads),
        vocab=int(_need(c, "vocab_size", src)),
        max_ctx=int(c.get("max_position_embeddings", 4096)),
        rms_eps=float(c.get("rms_norm_eps", 1e-6)),
        rope_theta=float(c.get("rope_theta", (c.get("rope_parameters") or {}).get("rope_theta", 10000.0))),
        tie_embeddings=bool(c.get("tie_word_embeddings", arch == "qwen2")),
        qkv_bias=arch == "qwen2" or bool(c.get("attention_bias", False)),
        rope_neox=True,
        rope_scaling=c.get("rope_scaling") or _rope_params(c),
    )
    cfg.check()
    return cfg


def _rope_params(c: dict[str, Any]) -> dict[str, Any] | None:
    """transformers >= 5 moved RoPE settings to `rope_parameters`."""
    p = c.get("rope_parameters")
    if isinstance(p, dict) and p.get("rope_type", "default") != "default":
        return p
    return None
