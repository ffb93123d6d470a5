"""Embedding models (encoders): their hyper-parameters and tensor names.

Two architectures, named as llama.cpp names them in GGUF files (`general.architecture`) and as
transformers does in a config.json (`model_type`):

  bert        absolute position and token-type embeddings, LayerNorm; per layer Q, K, V and O
              with biases, post-norm (LayerNorm after each residual add), FFN up + GELU (erf)
              + down with biases (all-MiniLM-L6-v2, BGE, ...)
  nomic-bert  token-type embeddings and LayerNorm; per layer a fused QKV without bias, rotary
              embeddings (rotate-half pairs), O, post-norm, SwiGLU FFN (gate, up, down) without
              biases (nomic-embed-text-v1/v1.5)

How a text's rows become one vector (pooling: the mean over its tokens, the [CLS] row, or the
last) and whether it is L2-normalized come from the GGUF metadata (`{arch}.pooling_type`;
llama.cpp normalizes embeddings by default) or from the sentence-transformers files of a
model directory (modules.json, the Pooling module's config.json, a Normalize module), as
sentence-transformers itself reads them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelFileError

ENCODER_ARCHS = ("bert", "nomic-bert")  # GGUF general.architecture
HF_ENCODERS = {"bert": "bert", "nomic_bert": "nomic-bert"}  # config.json model_type -> arch
# llama.cpp's enum llama_pooling_type
GGUF_POOLING = {1: "mean", 2: "cls", 3: "last"}
GGUF_POOLING_NAMES = {0: "none (one vector per token)", 4: "rank (a reranker's score)"}


@dataclass(frozen=True)
class EncoderConfig:
    arch: str  # bert | nomic-bert
    name: str
    n_layers: int
    hidden: int
    intermediate: int
    n_heads: int
    head_dim: int
    vocab: int
    max_tokens: int  # tokens a text may have (positions, or sentence-transformers' max_seq_length)
    norm_eps: float  # LayerNorm's epsilon
    pooling: str  # mean | cls | last
    normalize: bool  # L2-normalize each text's vector
    rope_theta: float = 0.0  # nomic-bert's rotary embeddings (0: absolute positions)
    positions: int = 0  # rows of the absolute position embeddings (bert)

    embedding = True  # (a decoder's ModelConfig has no such attribute)

    @property
    def n_kv_heads(self) -> int:
        return self.n_heads

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def rope(self) -> bool:
        return self.arch == "nomic-bert"

    @property
    def gated(self) -> bool:
        """SwiGLU (gate, up, down) rather than GELU (up, down)."""
        return self.arch == "nomic-bert"

    @property
    def bias(self) -> bool:
        return self.arch == "bert"

    def inv_freq(self) -> np.ndarray:
        d = self.head_dim
        return (1.0 / (self.rope_theta ** (np.arange(0, d, 2, dtype=np.float64) / d))).astype(np.float32)

    def check(self) -> None:
        problems = []
        if self.head_dim % 4 or self.head_dim > 256:
            problems.append(f"head size {self.head_dim} (need a multiple of 4, at most 256)")
        for what, v in (("hidden size", self.hidden), ("feed-forward size", self.intermediate)):
            if v % 4:
                problems.append(f"{what} {v} (need a multiple of 4)")
        if self.n_heads * self.head_dim != self.hidden:
            problems.append(f"{self.n_heads} heads of {self.head_dim} for a hidden size of {self.hidden}")
        if self.max_tokens < 2:
            problems.append(f"at most {self.max_tokens} tokens a text")
        if problems:
            raise ModelFileError("unsupported model shape: " + "; ".join(problems))


def is_encoder_gguf(metadata: dict[str, Any]) -> bool:
    return metadata.get("general.architecture") in ENCODER_ARCHS


def is_encoder_hf(config: dict[str, Any]) -> bool:
    return config.get("model_type") in HF_ENCODERS


def _need(md: dict[str, Any], key: str, src: str) -> Any:
    if key not in md:
        raise ModelFileError(f"{src}: missing metadata key {key!r}; the file is incomplete or not a supported model")
    return md[key]


def encoder_config_from_gguf(md: dict[str, Any], tensors: dict[str, Any], src: str) -> EncoderConfig:
    arch = str(md["general.architecture"])

    def g(key: str, default: Any = None) -> Any:
        full = f"{arch}.{key}"
        return md.get(full, default) if default is not None else _need(md, full, src)

    emb = tensors.get("token_embd.weight")
    if emb is None:
        raise ModelFileError(f"{src}: no tensor 'token_embd.weight'; not a supported model file")
    pooling_type = int(g("pooling_type", 1))  # older BERT files have none: mean, as sentence-transformers
    if pooling_type not in GGUF_POOLING:
        what = GGUF_POOLING_NAMES.get(pooling_type, str(pooling_type))
        raise ModelFileError(f"{src}: pooling type {what} is not supported (supported: mean, cls, last)")
    if bool(g("attention.causal", False)):
        raise ModelFileError(f"{src}: a causal {arch} model is not supported (embedding models attend both ways)")
    hidden, n_heads = int(g("embedding_length")), int(g("attention.head_count"))
    pos = tensors.get("position_embd.weight")
    positions = int(pos.shape[0]) if pos is not None else 0
    ctx = int(g("context_length", positions or 2048))
    cfg = EncoderConfig(
        arch=arch,
        name=str(md.get("general.name", src)),
        n_layers=int(g("block_count")),
        hidden=hidden,
        intermediate=int(g("feed_forward_length")),
        n_heads=n_heads,
        head_dim=hidden // n_heads,
        vocab=int(emb.shape[0]),
        max_tokens=min(ctx, positions) if arch == "bert" and positions else ctx,
        norm_eps=float(g("attention.layer_norm_epsilon", 1e-12)),
        pooling=GGUF_POOLING[pooling_type],
        normalize=True,  # llama.cpp's default (embd_normalize 2: the Euclidean norm)
        rope_theta=float(g("rope.freq_base", 10000.0)) if arch == "nomic-bert" else 0.0,
        positions=positions,
    )
    if arch == "bert" and pos is None:
        raise ModelFileError(f"{src}: no tensor 'position_embd.weight'; a bert model needs its position embeddings")
    cfg.check()
    return cfg


# nomic-bert's published config.json is its remote code's, with GPT-2's names for the same fields
_NOMIC_REMOTE_KEYS = {"n_embd": "hidden_size", "n_head": "num_attention_heads", "n_layer": "num_hidden_layers",
                      "n_inner": "intermediate_size", "n_positions": "max_position_embeddings",
                      "layer_norm_epsilon": "layer_norm_eps", "rotary_emb_base": "rope_theta"}


def _nomic_remote_config(c: dict[str, Any], src: str) -> dict[str, Any]:
    """A remote-code nomic-bert config.json in transformers' names; what the engine cannot run
    (pre-norm, biases, partial or interleaved or scaled rotary) is an error."""
    out = dict(c)
    for old, new in _NOMIC_REMOTE_KEYS.items():
        if old in c:
            out.setdefault(new, c[old])
    act = c.get("activation_function", "swiglu")
    problems = [f"activation {act!r}"] if act != "swiglu" else []
    for key, fine in (("prenorm", False), ("qkv_proj_bias", False), ("mlp_fc1_bias", False),
                      ("mlp_fc2_bias", False), ("rotary_emb_fraction", 1.0), ("rotary_emb_interleaved", False),
                      ("rotary_scaling_factor", None)):
        if c.get(key, fine) != fine:
            problems.append(f"{key} {c[key]!r}")
    if problems:
        raise ModelFileError(f"{src}: this nomic-bert variant is not supported ({', '.join(problems)})")
    out["hidden_act"] = "silu"
    return out


def encoder_config_from_hf(c: dict[str, Any], root: Path, src: str) -> EncoderConfig:
    arch = HF_ENCODERS[str(c["model_type"])]
    if arch == "nomic-bert" and "n_embd" in c:
        c = _nomic_remote_config(c, src)
    hidden = int(_need(c, "hidden_size", src))
    n_heads = int(_need(c, "num_attention_heads", src))
    act = str(c.get("hidden_act", "gelu" if arch == "bert" else "silu"))
    want = "gelu" if arch == "bert" else "silu"
    if act != want:
        raise ModelFileError(f"{src}: activation {act!r} is not supported for {arch} (supported: {want})")
    if arch == "bert" and c.get("position_embedding_type", "absolute") != "absolute":
        raise ModelFileError(f"{src}: position embeddings {c['position_embedding_type']!r} are not supported "
                             "(supported: absolute)")
    positions = int(c.get("max_position_embeddings", 512))
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    if arch == "nomic-bert" and rope.get("rope_type", "default") != "default":
        raise ModelFileError(f"{src}: RoPE scaling {rope.get('rope_type')!r} is not supported")
    theta = float(rope.get("rope_theta", c.get("rope_theta", 1000.0)))
    pooling, normalize, max_seq = sentence_transformers_settings(root)
    cfg = EncoderConfig(
        arch=arch,
        name=_card_title(root) or str(c.get("_name_or_path") or src),
        n_layers=int(_need(c, "num_hidden_layers", src)),
        hidden=hidden,
        intermediate=int(_need(c, "intermediate_size", src)),
        n_heads=n_heads,
        head_dim=int(c.get("head_dim") or hidden // n_heads),
        vocab=int(_need(c, "vocab_size", src)),
        max_tokens=min(max_seq, positions) if max_seq else positions,
        norm_eps=float(c.get("layer_norm_eps", 1e-12)),
        pooling=pooling,
        normalize=normalize,
        rope_theta=theta if arch == "nomic-bert" else 0.0,
        positions=positions if arch == "bert" else 0,
    )
    cfg.check()
    return cfg


def _card_title(root: Path) -> str | None:
    """A sentence-transformers model's name: its model card's title (the first "# " heading
    outside the front matter and code), since config.json's _name_or_path names the model it
    was trained from (all-MiniLM-L6-v2's says nreimers/MiniLM-L6-H384-uncased)."""
    card = root / "README.md"
    if not (root / "modules.json").is_file() or not card.is_file():
        return None
    lines = card.read_text(encoding="utf-8", errors="replace").splitlines()
    if lines and lines[0].strip() == "---":  # YAML front matter, whose comments also start with "#"
        end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), len(lines))
        lines = lines[end + 1:]
    fenced = False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("# ") and line[2:].strip():
            return line[2:].strip()
    return None


def sentence_transformers_settings(root: Path) -> tuple[str, bool, int]:
    """(pooling, normalize, max_seq_length or 0) as sentence-transformers reads a model
    directory: its modules.json lists a Pooling module (whose config.json says the mode) and
    maybe a Normalize module; sentence_bert_config.json caps the tokens. Without modules.json,
    sentence-transformers wraps a plain model in mean pooling, not normalized."""
    modules = _json(root / "modules.json", [])
    if not isinstance(modules, list):
        raise ModelFileError(f"{root / 'modules.json'}: not a list of modules")
    pooling, normalize = "mean", False
    for m in modules:
        kind = str(m.get("type", "")) if isinstance(m, dict) else ""
        if kind.endswith(".Pooling"):
            pooling = _pooling_mode(_json(root / str(m.get("path", "")) / "config.json", {}), root)
        elif kind.endswith(".Normalize"):
            normalize = True
        elif kind and not kind.endswith((".Transformer", ".Pooling", ".Normalize")):
            raise ModelFileError(f"{root}: sentence-transformers module {kind!r} is not supported "
                                 "(supported: Transformer, Pooling, Normalize)")
    st = _json(root / "sentence_bert_config.json", {})
    max_seq = st.get("max_seq_length") if isinstance(st, dict) else None
    return pooling, normalize, int(max_seq) if isinstance(max_seq, int) and max_seq > 0 else 0


def _pooling_mode(pc: dict[str, Any], root: Path) -> str:
    if isinstance(pc.get("pooling_mode"), str):  # sentence-transformers >= 5 writes the mode by name
        mode = {"mean": "mean", "cls": "cls", "lasttoken": "last"}.get(pc["pooling_mode"])
        if mode is None:
            raise ModelFileError(f"{root}: pooling {pc['pooling_mode']!r} is not supported (supported: mean, cls, "
                                 "lasttoken)")
        return mode
    on = [k.removeprefix("pooling_mode_") for k, v in pc.items() if k.startswith("pooling_mode_") and v is True]
    modes = {"mean_tokens": "mean", "cls_token": "cls", "lasttoken": "last"}
    if len(on) != 1 or on[0] not in modes:
        raise ModelFileError(f"{root}: pooling {' + '.join(on) or 'none'} is not supported (supported: one of "
                             "mean_tokens, cls_token, lasttoken)")
    return modes[on[0]]


def _json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFileError(f"{path}: cannot read ({' '.join(str(e).split())})") from None


# Hugging Face tensor names -> GGUF names (gguf.constants' maps for bert and nomic-bert)
_BERT = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
_BERT_LAYER = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_NOMIC_LAYER = {  # transformers' NomicBertModel
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "attn_output_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "post_mlp_layernorm": "layer_output_norm",
}
# nomic-bert checkpoints as published (and as transformers >= 5 saves NomicBertModel: it renames
# these to the names above at load and back at save): a fused Wqkv, fc11 the up and fc12 the gate
_NOMIC_CHECKPOINT = {"emb_ln.weight": "token_embd_norm.weight", "emb_ln.bias": "token_embd_norm.bias"}
_NOMIC_CHECKPOINT_LAYER = {
    "attn.Wqkv": "attn_qkv",
    "attn.out_proj": "attn_output",
    "norm1": "attn_output_norm",
    "mlp.fc11": "ffn_up",
    "mlp.fc12": "ffn_gate",
    "mlp.fc2": "ffn_down",
    "norm2": "layer_output_norm",
}
_LAYER_RE = re.compile(r"^(?:encoder\.layers?|layers)\.(\d+)\.(.+)\.(weight|bias)$")


def encoder_tensor_name(arch: str, name: str) -> str | None:
    """The GGUF name of a Hugging Face encoder tensor (None: not used); `arch` as GGUF or
    config.json's model_type names it."""
    arch = HF_ENCODERS.get(arch, arch)
    name = name.removeprefix("bert.").removeprefix("model.")
    if name in _BERT:
        return _BERT[name]
    if arch == "nomic-bert" and name in _NOMIC_CHECKPOINT:
        return _NOMIC_CHECKPOINT[name]
    m = _LAYER_RE.match(name)
    if m:
        layer = _BERT_LAYER if arch == "bert" else {**_NOMIC_LAYER, **_NOMIC_CHECKPOINT_LAYER}
        part = layer.get(m.group(2))
        if part is not None:
            return f"blk.{m.group(1)}.{part}.{m.group(3)}"
    return None
