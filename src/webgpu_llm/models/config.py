"""Model hyper-parameters, normalised from GGUF metadata or a Hugging Face config.json.

A decoder family is Llama's layer plus what its `Architecture` says: which extra norms and
where, the FFN's activation, per-layer attention windows and RoPE, scales and soft-caps. The
engine reads that description (engine/weights.py, engine/programs.py); nothing else in it
depends on the family's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import ModelFileError

SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "gemma2", "gemma3", "phi3", "smollm3", "qwen3moe", "mixtral", "gpt-oss")
# GGUF architectures whose Q/K rows are stored in Hugging Face's rotate-half order (llama.cpp's
# NEOX RoPE); the others (llama, smollm3) were permuted to adjacent pairs by the converter
_NEOX_GGUF = ("qwen2", "qwen3", "gemma2", "gemma3", "phi3", "qwen3moe", "gpt-oss")
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh",
               "swiglu_oai": "swiglu_oai"}  # (the last: gpt-oss's clamped SwiGLU, set by the family)


@dataclass(frozen=True)
class Moe:
    """A mixture-of-experts FFN: `used` of `count` experts a token, each a SwiGLU of `ffn`."""

    count: int
    used: int
    ffn: int
    # gate weights: softmax over the chosen experts' logits (Mixtral, Qwen3-MoE's
    # norm_topk_prob), else over all of them
    normalize: bool = True
    dense: tuple[int, ...] = ()  # layers with a dense FFN instead (Qwen3-MoE's mlp_only_layers)
    bias: bool = False  # the router and every expert's projections have biases (gpt-oss)

    def at(self, i: int) -> bool:
        return i not in self.dense


@dataclass(frozen=True)
class Architecture:
    """How a family's decoder layer differs from Llama's (the defaults are Llama's)."""

    qk_norm: bool = False  # RMSNorm of every q and k head (head_dim weights) before RoPE (Qwen3, Gemma 3)
    post_norms: bool = False  # RMSNorm of the attention's and the FFN's outputs before the residual add (Gemma)
    act: str = "silu"  # the FFN's gate activation: silu | gelu_tanh (GeGLU with tanh-GELU)
    norm_shift: float = 0.0  # added to every RMSNorm weight at load: Gemma's (1 + w) (folded into GGUF files)
    embed_scale: float = 1.0  # embeddings times this (Gemma: sqrt(hidden))
    attn_scale: float = 0.0  # attention scores times this; 0: 1/sqrt(head_dim) (Gemma: query_pre_attn_scalar^-1/2)
    attn_softcap: float = 0.0  # scores -> cap * tanh(scores / cap) before the mask (Gemma 2); 0: none
    final_softcap: float = 0.0  # logits likewise (Gemma 2, some Gemma 3)
    windows: tuple[int, ...] = ()  # per layer: a query sees its last `w` keys (0: all); (): every layer all
    local_rope_theta: float = 0.0  # RoPE base of the sliding-window layers (Gemma 3); 0: the global one
    rope_layers: tuple[bool, ...] = ()  # per layer: does it rotate q and k (SmolLM3's NoPE layers: no); (): all do
    rope_dim: int = 0  # rotated dims of a head (partial rotary, Phi-4-mini: 96 of 128); 0: all
    moe: Moe | None = None  # a mixture of experts instead of the FFN (Qwen3-MoE, Mixtral, gpt-oss)
    sinks: bool = False  # a learned logit per head in the attention's softmax (gpt-oss)
    o_bias: bool = False  # the attention's output projection has a bias (gpt-oss)

    def window(self, i: int) -> int:
        return self.windows[i] if self.windows else 0

    def rotates(self, i: int) -> bool:
        return self.rope_layers[i] if self.rope_layers else True

    def experts(self, i: int) -> Moe | None:
        """Layer i's mixture of experts (None: a dense FFN)."""
        return self.moe if self.moe is not None and self.moe.at(i) else None

    @property
    def plain(self) -> bool:
        """Llama's kernels suffice (options of them): no norm that needs a kernel of its own."""
        return not (self.qk_norm or self.post_norms or self.moe)


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
    architecture: Architecture = Architecture()

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def rope_dim(self) -> int:
        return self.architecture.rope_dim or self.head_dim

    @property
    def long_rope(self) -> bool:
        return _scaling_kind(self.rope_scaling) == "longrope"

    def inv_freq(self, layer: int = 0, ctx: int = 0) -> np.ndarray:
        """RoPE inverse frequency of each of the head_dim/2 pairs of `layer`, with scaling
        applied (LongRoPE: the long factors where `ctx` exceeds the original context, as
        llama.cpp chooses them by its context); 0 for pairs that are not rotated (partial
        rotary, NoPE layers), which RoPE then leaves as they are."""
        a = self.architecture
        out = np.zeros(self.head_dim // 2, np.float32)
        if not a.rotates(layer):
            return out
        d = self.rope_dim
        local = a.local_rope_theta > 0 and a.window(layer) > 0
        theta = a.local_rope_theta if local else self.rope_theta
        power = (theta ** (np.arange(0, d, 2, dtype=np.float32) / np.float32(d))).astype(np.float32)
        inv = (1.0 / power).astype(np.float32)
        if not local:
            inv = self._scaled(inv, power, ctx)
        out[: d // 2] = inv
        return out

    def _scaled(self, inv: np.ndarray, power: np.ndarray, ctx: int) -> np.ndarray:
        if self.rope_freq_factors is not None:
            return (inv / self.rope_freq_factors.astype(np.float32)).astype(np.float32)
        sc = self.rope_scaling or {}
        kind = _scaling_kind(sc)
        if kind in (None, "default"):
            return inv
        if kind == "linear":
            return (inv / np.float32(sc["factor"])).astype(np.float32)
        if kind == "llama3":
            return _llama3_inv_freq(inv, sc)
        if kind == "yarn":
            return _yarn_inv_freq(inv, sc, self.rope_dim, self.rope_theta)
        if kind == "longrope":
            long = ctx > int(sc["original_max_position_embeddings"])
            ext = np.asarray(sc["long_factor" if long else "short_factor"], np.float32)
            if ext.shape != inv.shape:
                raise ModelFileError(f"LongRoPE factors: {ext.shape[0]}, expected {inv.shape[0]} (rotated dims / 2)")
            return (1.0 / (ext * power)).astype(np.float32)
        raise ModelFileError(f"RoPE scaling {kind!r} is not supported (supported: linear, llama3, longrope, yarn)")

    def rope_attention_factor(self) -> float:
        """LongRoPE's and YaRN's scale of the rotated dims of q and k (1 for the other kinds)."""
        sc = self.rope_scaling or {}
        if _scaling_kind(sc) == "yarn":
            if sc.get("attention_factor") is not None:
                return float(sc["attention_factor"])
            return 0.1 * math.log(float(sc["factor"])) + 1.0 if float(sc["factor"]) > 1 else 1.0
        if _scaling_kind(sc) != "longrope":
            return 1.0
        if sc.get("attention_factor") is not None:
            return float(sc["attention_factor"])
        orig = float(sc["original_max_position_embeddings"])
        factor = float(sc.get("factor") or self.max_ctx / orig)
        return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))

    def check(self) -> None:
        if self.arch not in SUPPORTED_ARCHS:
            raise ModelFileError(
                f"architecture {self.arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")
        a = self.architecture
        problems = []
        if self.n_heads % self.n_kv_heads:
            problems.append(f"{self.n_heads} heads are not a multiple of {self.n_kv_heads} KV heads")
        if self.head_dim % 4 or self.head_dim > 256:
            problems.append(f"head size {self.head_dim} (need a multiple of 4, at most 256)")
        if self.rope_dim % 2 or self.rope_dim > self.head_dim:
            problems.append(f"{self.rope_dim} rotated dims of a {self.head_dim}-dim head")
        for what, v in (("hidden size", self.hidden), ("feed-forward size", self.intermediate)):
            if v % 4:
                problems.append(f"{what} {v} (need a multiple of 4)")
        if a.act not in ACTIVATIONS.values():
            problems.append(f"activation {a.act!r} (supported: silu, gelu_pytorch_tanh)")
        if a.qk_norm and self.qkv_bias:
            problems.append("QKV biases with per-head q/k norms")
        for what, per_layer in (("windows", a.windows), ("RoPE layers", a.rope_layers)):
            if per_layer and len(per_layer) != self.n_layers:
                problems.append(f"{len(per_layer)} per-layer {what} for {self.n_layers} layers")
        if (m := a.moe) is not None:
            if not 1 <= m.used <= m.count or m.count > 1024:
                problems.append(f"{m.used} of {m.count} experts a token (at most 1024 experts)")
            if m.ffn % 4:
                problems.append(f"expert feed-forward size {m.ffn} (need a multiple of 4)")
        if problems:
            raise ModelFileError("unsupported model shape: " + "; ".join(problems))


def _scaling_kind(sc: dict[str, Any] | None) -> str | None:
    sc = sc or {}
    kind = sc.get("rope_type", sc.get("type"))
    return "longrope" if kind == "su" else kind


def _yarn_inv_freq(inv: np.ndarray, sc: dict[str, Any], dim: int, theta: float) -> np.ndarray:
    """YaRN: interpolated (divided by the factor) below the low-frequency edge, extrapolated
    (as they are) above the high one, a linear ramp between, as transformers computes it
    (`truncate`: the edges rounded outwards, as llama.cpp always does)."""
    factor, orig = float(sc["factor"]), float(sc["original_max_position_embeddings"])
    fast, slow = float(sc.get("beta_fast") or 32), float(sc.get("beta_slow") or 1)

    def corr(rot: float) -> float:
        return dim * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(theta))

    low, high = corr(fast), corr(slow)
    if sc.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extra = 1 - ramp  # 1: extrapolated, as the plain frequency
    return (inv / np.float32(factor) * (1 - extra) + inv * extra).astype(np.float32)


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


def _unsupported(what: str, arch: str, src: str) -> ModelFileError:
    return ModelFileError(f"{src}: {what} {arch!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})")


def _pattern(n_layers: int, period: int) -> tuple[bool, ...]:
    """Sliding-window layers of an interleaved pattern: all but every `period`-th layer."""
    return tuple((i + 1) % period != 0 for i in range(n_layers))


def config_from_gguf(md: dict[str, Any], tensors: dict[str, Any], src: str) -> ModelConfig:
    arch = str(_need(md, "general.architecture", src))
    if arch not in SUPPORTED_ARCHS:
        raise _unsupported("architecture", arch, src)

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
    n_layers = int(g("block_count"))
    max_ctx = int(g("context_length", 4096))
    scaling = None
    stype = g("rope.scaling.type", "none")
    if stype not in ("none", ""):
        scaling = {"rope_type": stype, "factor": float(g("rope.scaling.factor", 1.0))}
        if stype == "yarn":  # llama.cpp rounds YaRN's ramp edges outwards (truncate)
            scaling.update(original_max_position_embeddings=int(g("rope.scaling.original_context_length", max_ctx)),
                           truncate=True)
    long_f, short_f = tensors.get("rope_factors_long.weight"), tensors.get("rope_factors_short.weight")
    if long_f is not None and short_f is not None:  # LongRoPE (phi3): the converter writes both factor lists
        scaling = {"rope_type": "longrope", "long_factor": np.asarray(long_f.data(), np.float32).tolist(),
                   "short_factor": np.asarray(short_f.data(), np.float32).tolist(),
                   "original_max_position_embeddings": int(g("rope.scaling.original_context_length", max_ctx)),
                   "attention_factor": md.get(f"{arch}.rope.scaling.attn_factor")}
    elif rope_dim != head_dim and arch != "phi3":
        raise ModelFileError(f"{src}: partial rotary embeddings ({rope_dim} of {head_dim}) are not supported for {arch}")
    factors = tensors.get("rope_freqs.weight")
    a = _gguf_architecture(arch, g, n_layers, hidden, n_heads, head_dim, rope_dim)
    cfg = ModelConfig(
        arch=arch,
        name=str(md.get("general.name", src)),
        n_layers=n_layers,
        hidden=hidden,
        intermediate=int(g("feed_forward_length")),
        n_heads=n_heads,
        n_kv_heads=int(kv if not isinstance(kv, list) else kv[0]),
        head_dim=head_dim,
        vocab=int(emb.shape[0]),
        max_ctx=max_ctx,
        rms_eps=float(g("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(g("rope.freq_base", 10000.0)),
        tie_embeddings="output.weight" not in tensors,
        qkv_bias="blk.0.attn_q.bias" in tensors,
        rope_neox=arch in _NEOX_GGUF,
        rope_scaling=scaling,
        rope_freq_factors=np.array(factors.data(), np.float32) if factors is not None else None,
        architecture=a,
    )
    cfg.check()
    return cfg


def _gguf_architecture(arch: str, g: Any, n_layers: int, hidden: int, n_heads: int, head_dim: int,
                       rope_dim: int) -> Architecture:
    """The family's description from its GGUF keys, with llama.cpp's defaults for those a
    converter leaves out (llama-model.cpp's hparams of each architecture)."""
    count = int(g("expert_count", 0))
    moe = None
    if count:  # llama.cpp normalizes the chosen experts' weights for both (Mixtral is GGUF "llama")
        moe = Moe(count, int(g("expert_used_count")), int(g("expert_feed_forward_length", 0)) or int(g("feed_forward_length")))
    if arch in ("llama", "qwen2"):
        return Architecture(moe=moe)
    if arch == "gpt-oss":  # every other layer a sliding window, starting with the first
        assert moe is not None
        w = int(g("attention.sliding_window", 128))
        return Architecture(act="swiglu_oai", sinks=True, o_bias=True, moe=replace(moe, bias=True),
                            windows=tuple(w if i % 2 == 0 else 0 for i in range(n_layers)))
    if arch in ("qwen3", "qwen3moe"):
        return Architecture(qk_norm=True, moe=moe)
    if arch == "smollm3":  # llama.cpp: no RoPE in every 4th layer (no key for it)
        return Architecture(rope_layers=tuple((i + 1) % 4 != 0 for i in range(n_layers)))
    if arch == "phi3":
        w = int(g("attention.sliding_window", 0))
        return Architecture(rope_dim=rope_dim if rope_dim != head_dim else 0,
                            windows=(w,) * n_layers if w > 0 else ())
    # gemma2, gemma3: the converter folds Gemma's (1 + w) into the norm weights; the query
    # scale is 1/sqrt(head_dim) but for the 27B models (llama.cpp's rule), unless the file says
    big = n_layers == (46 if arch == "gemma2" else 62)
    scalar = hidden / n_heads if big else head_dim
    scale = float(g("attention.scale", 0.0)) or scalar ** -0.5
    common = dict(post_norms=True, act="gelu_tanh", embed_scale=math.sqrt(hidden), attn_scale=scale)
    if arch == "gemma2":
        w = int(g("attention.sliding_window", 4096))
        return Architecture(**common, windows=tuple(w if s else 0 for s in _pattern(n_layers, 2)),
                            attn_softcap=float(g("attn_logit_softcapping", 50.0)),
                            final_softcap=float(g("final_logit_softcapping", 30.0)))
    w = int(g("attention.sliding_window", 0))
    return Architecture(**common, qk_norm=True, final_softcap=float(g("final_logit_softcapping", 0.0)),
                        windows=tuple(w if s else 0 for s in _pattern(n_layers, 6)) if w > 0 else (),
                        local_rope_theta=float(g("rope.freq_base_swa", 10000.0)))


def config_from_hf(c: dict[str, Any], src: str) -> ModelConfig:
    arch = str(c.get("model_type", "?"))
    if arch == "gemma3" and isinstance(c.get("text_config"), dict):  # Gemma3ForConditionalGeneration: its text model
        c = {**c["text_config"], "model_type": "gemma3_text", "_name_or_path": c.get("_name_or_path")}
    arch = {"gemma3_text": "gemma3", "qwen3_moe": "qwen3moe", "gpt_oss": "gpt-oss"}.get(str(c.get("model_type", "?")), str(c.get("model_type", "?")))
    if arch not in SUPPORTED_ARCHS:
        raise _unsupported("model_type", arch, src)
    n_heads = int(_need(c, "num_attention_heads", src))
    hidden = int(_need(c, "hidden_size", src))
    n_layers = int(_need(c, "num_hidden_layers", src))
    head_dim = int(c.get("head_dim") or hidden // n_heads)
    params = _rope_parameters(c)
    full = params.get("full_attention", params) if isinstance(params.get("full_attention"), dict) else params
    theta = float(full.get("rope_theta") or c.get("rope_theta") or 10000.0)
    scaling = None if full.get("rope_type", full.get("type", "default")) == "default" else dict(full)
    if scaling is not None and _scaling_kind(scaling) == "longrope":
        scaling.setdefault("original_max_position_embeddings", c.get("original_max_position_embeddings"))
    cfg = ModelConfig(
        arch=arch,
        name=str(c.get("_name_or_path") or src),
        n_layers=n_layers,
        hidden=hidden,
        intermediate=int(_need(c, "intermediate_size", src)),
        n_heads=n_heads,
        n_kv_heads=int(c.get("num_key_value_heads") or n_heads),
        head_dim=head_dim,
        vocab=int(_need(c, "vocab_size", src)),
        max_ctx=int(c.get("max_position_embeddings", 4096)),
        rms_eps=float(c.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        tie_embeddings=bool(c.get("tie_word_embeddings", arch in ("qwen2", "gemma2", "gemma3"))),
        qkv_bias=arch == "qwen2" or bool(c.get("attention_bias", False)),
        rope_neox=True,
        rope_scaling=scaling,
        architecture=_hf_architecture(arch, c, params, n_layers, hidden, head_dim, src),
    )
    cfg.check()
    return cfg


def _rope_parameters(c: dict[str, Any]) -> dict[str, Any]:
    """RoPE settings: `rope_parameters` (transformers >= 5; per layer type for Gemma 3), or the
    older `rope_scaling` with `rope_theta` beside it."""
    p = c.get("rope_parameters")
    if isinstance(p, dict):
        return p
    out = dict(c.get("rope_scaling") or {})
    if c.get("rope_theta") is not None:
        out.setdefault("rope_theta", c["rope_theta"])
    if c.get("rope_local_base_freq") is not None:  # Gemma 3 before transformers 5
        out = {"full_attention": out, "sliding_attention": {"rope_type": "default",
                                                            "rope_theta": c["rope_local_base_freq"]}}
    return out


def _layer_types(arch: str, c: dict[str, Any], n_layers: int) -> list[str]:
    """Each layer's attention ("sliding_attention" or "full_attention"), as transformers
    derives them where config.json does not list them."""
    if isinstance(c.get("layer_types"), list):
        return list(c["layer_types"])
    if arch == "gemma2":
        return ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(n_layers)]
    if arch == "gemma3":
        period = int(c.get("sliding_window_pattern") or 6)
        return ["sliding_attention" if (i + 1) % period else "full_attention" for i in range(n_layers)]
    if arch in ("phi3", "mixtral"):
        return ["sliding_attention" if c.get("sliding_window") else "full_attention"] * n_layers
    if arch in ("qwen2", "qwen3", "qwen3moe"):
        first = int(c.get("max_window_layers", n_layers))
        return ["sliding_attention" if c.get("use_sliding_window") and i >= first else "full_attention"
                for i in range(n_layers)]
    if arch == "smollm3":
        nope = c.get("no_rope_layers") or []
        return ["sliding_attention" if c.get("use_sliding_window") and c.get("sliding_window") and i < len(nope)
                and not nope[i] else "full_attention" for i in range(n_layers)]
    return ["full_attention"] * n_layers


def _hf_architecture(arch: str, c: dict[str, Any], params: dict[str, Any], n_layers: int, hidden: int,
                     head_dim: int, src: str) -> Architecture:
    act = str(c.get("hidden_activation") or c.get("hidden_act") or "silu")
    if act not in ACTIVATIONS:
        raise ModelFileError(f"{src}: activation {act!r} is not supported (supported: {', '.join(ACTIVATIONS)})")
    w = int(c.get("sliding_window") or 0)
    windows = tuple(w if t == "sliding_attention" else 0 for t in _layer_types(arch, c, n_layers)) if w else ()
    kw: dict[str, Any] = dict(act=ACTIVATIONS[act], windows=windows if any(windows) else ())
    if arch == "qwen3":
        kw.update(qk_norm=True)
    elif arch == "qwen3moe":  # a layer is sparse on every decoder_sparse_step-th, unless listed dense
        step, only = int(c.get("decoder_sparse_step") or 1), set(c.get("mlp_only_layers") or ())
        dense = tuple(i for i in range(n_layers) if i in only or (i + 1) % step)
        experts = c.get("num_experts") or _need(c, "num_local_experts", src)  # (transformers 5's name)
        kw.update(qk_norm=True, moe=Moe(int(experts), int(_need(c, "num_experts_per_tok", src)),
                                         int(_need(c, "moe_intermediate_size", src)), bool(c.get("norm_topk_prob", False)),
                                         dense))
    elif arch == "gpt-oss":
        kw.update(act="swiglu_oai", sinks=True, o_bias=True,
                  moe=Moe(int(_need(c, "num_local_experts", src)), int(_need(c, "num_experts_per_tok", src)),
                          int(_need(c, "intermediate_size", src)), bias=True))
    elif arch == "mixtral":
        kw.update(moe=Moe(int(_need(c, "num_local_experts", src)), int(_need(c, "num_experts_per_tok", src)),
                          int(_need(c, "intermediate_size", src))))
    elif arch == "smollm3":
        nope = c.get("no_rope_layers")
        if nope is None:
            step = int(c.get("no_rope_layer_interval", 4))
            nope = [int((i + 1) % step != 0) for i in range(n_layers)]
        kw.update(rope_layers=tuple(bool(x) for x in nope))
    elif arch == "phi3":
        partial = float(params.get("partial_rotary_factor", c.get("partial_rotary_factor", 1.0)))
        rot = int(head_dim * partial)
        kw.update(rope_dim=rot if rot != head_dim else 0)
    elif arch in ("gemma2", "gemma3"):
        kw.update(post_norms=True, norm_shift=1.0, embed_scale=math.sqrt(hidden),
                  attn_scale=float(c.get("query_pre_attn_scalar") or head_dim) ** -0.5,
                  attn_softcap=float(c.get("attn_logit_softcapping") or 0.0),
                  final_softcap=float(c.get("final_logit_softcapping") or 0.0))
        local = params.get("sliding_attention")
        if arch == "gemma3":
            kw.update(qk_norm=True, local_rope_theta=float(local["rope_theta"]) if isinstance(local, dict) else 10000.0)
    return Architecture(**kw)
