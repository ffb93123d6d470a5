"""References for the embedding models (bert, nomic-bert), and GGUF files to test them with.

``encode_reference`` runs an encoder in numpy (float64 accumulation) from tensors under their
GGUF names, written from the architectures' definitions (transformers' BertModel and
NomicBertModel; llama.cpp's build_bert): it needs neither the engine nor transformers, and a
test checks it against transformers where that has the model. ``nomic_from_gguf_tensors``
builds transformers' NomicBertModel from such tensors. ``write_encoder_gguf`` lays tensors and
a WordPiece vocabulary out as llama.cpp's converter does (``bert_gguf_tokens``: "▁" before a
word-initial piece, "##" dropped from a continuation); ``random_nomic_tensors`` and
``minilm_tensors`` give the tensors of a tiny random nomic-bert and of all-MiniLM-L6-v2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

_erf = np.vectorize(math.erf, otypes=[np.float64])


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def _rotate_half(x: np.ndarray, pos: np.ndarray, theta: float) -> np.ndarray:
    """transformers' rotary embedding: pairs (i, i + d/2) of each head, x (t, heads, d)."""
    d = x.shape[-1]
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)
    ang = pos[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None, :]
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def encode_reference(get: Callable[[str], np.ndarray | None], arch: str, n_heads: int, eps: float,
                     ids: Sequence[int], pooling: str = "mean", normalize: bool = True,
                     rope_theta: float = 1000.0) -> np.ndarray:
    """One text's vector. `get(name)` gives a tensor by GGUF name as float64 (None if absent)."""

    def need(name: str) -> np.ndarray:
        t = get(name)
        assert t is not None, name
        return t

    def lin(x: np.ndarray, name: str) -> np.ndarray:
        y = x @ need(name + ".weight").T
        b = get(name + ".bias")
        return y if b is None else y + b

    ids = np.asarray(ids)
    n = len(ids)
    x = need("token_embd.weight")[ids] + need("token_types.weight")[0]
    if arch == "bert":
        x = x + need("position_embd.weight")[:n]
    x = _layer_norm(x, need("token_embd_norm.weight"), need("token_embd_norm.bias"), eps)
    i = 0
    while get(f"blk.{i}.attn_output.weight") is not None:
        b = f"blk.{i}."
        hid = x.shape[1]
        if get(b + "attn_qkv.weight") is not None:
            qkv = lin(x, b + "attn_qkv")
            q, k, v = qkv[:, :hid], qkv[:, hid: 2 * hid], qkv[:, 2 * hid:]
        else:
            q, k, v = lin(x, b + "attn_q"), lin(x, b + "attn_k"), lin(x, b + "attn_v")
        d = hid // n_heads
        q, k, v = (a.reshape(n, n_heads, d) for a in (q, k, v))
        if arch == "nomic-bert":
            pos = np.arange(n, dtype=np.float64)
            q, k = _rotate_half(q, pos, rope_theta), _rotate_half(k, pos, rope_theta)
        s = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(d)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        att = np.einsum("hqk,khd->qhd", p, v).reshape(n, hid)
        x = _layer_norm(x + lin(att, b + "attn_output"), need(b + "attn_output_norm.weight"),
                        need(b + "attn_output_norm.bias"), eps)
        if arch == "nomic-bert":
            g = lin(x, b + "ffn_gate")
            f = lin(g / (1.0 + np.exp(-g)) * lin(x, b + "ffn_up"), b + "ffn_down")
        else:
            u = lin(x, b + "ffn_up")
            f = lin(0.5 * u * (1.0 + _erf(u / math.sqrt(2.0))), b + "ffn_down")
        x = _layer_norm(x + f, need(b + "layer_output_norm.weight"), need(b + "layer_output_norm.bias"), eps)
        i += 1
    out = {"mean": x.mean(0), "cls": x[0], "last": x[-1]}[pooling]
    return out / max(np.linalg.norm(out), 1e-12) if normalize else out


def nomic_from_gguf_tensors(get: Callable[[str], np.ndarray], n_layers: int, n_heads: int, eps: float,
                            rope_theta: float, max_pos: int) -> Any:
    """transformers' NomicBertModel (float32, eval) holding nomic-bert tensors given by GGUF name."""
    import torch
    from transformers import NomicBertConfig, NomicBertModel

    def f(name: str) -> Any:
        return torch.tensor(np.asarray(get(name), np.float32))

    emb = f("token_embd.weight")
    hid = emb.shape[1]
    cfg = NomicBertConfig(vocab_size=emb.shape[0], hidden_size=hid, num_hidden_layers=n_layers,
                          num_attention_heads=n_heads, intermediate_size=int(get("blk.0.ffn_up.weight").shape[0]),
                          max_position_embeddings=max_pos, layer_norm_eps=eps, type_vocab_size=2,
                          rope_parameters={"rope_type": "default", "rope_theta": rope_theta})
    model = NomicBertModel(cfg).eval()
    sd = {"embeddings.word_embeddings.weight": emb, "embeddings.token_type_embeddings.weight": f("token_types.weight"),
          "embeddings.LayerNorm.weight": f("token_embd_norm.weight"), "embeddings.LayerNorm.bias": f("token_embd_norm.bias")}
    for i in range(n_layers):
        b, L = f"blk.{i}.", f"layers.{i}."
        qkv = f(b + "attn_qkv.weight")
        for j, x in enumerate("qkv"):
            sd[f"{L}self_attn.{x}_proj.weight"] = qkv[j * hid: (j + 1) * hid]
        sd[L + "self_attn.o_proj.weight"] = f(b + "attn_output.weight")
        for hf, gg in (("gate_proj", "ffn_gate"), ("up_proj", "ffn_up"), ("down_proj", "ffn_down")):
            sd[f"{L}mlp.{hf}.weight"] = f(b + gg + ".weight")
        for hf, gg in (("post_attention_layernorm", "attn_output_norm"), ("post_mlp_layernorm", "layer_output_norm")):
            sd[f"{L}{hf}.weight"], sd[f"{L}{hf}.bias"] = f(b + gg + ".weight"), f(b + gg + ".bias")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return model


def hf_mean_normalized(model: Any, ids: Sequence[int]) -> np.ndarray:
    """Mean-pooled, L2-normalized last hidden state of transformers' model for one text."""
    return hf_pooled(model, ids)


# -- GGUF files ------------------------------------------------------------------------------
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def bert_gguf_tokens(vocab: Sequence[str]) -> list[str]:
    """A WordPiece vocabulary as llama.cpp's converter writes it for its WPM tokenizer."""
    def one(t: str) -> str:
        if t.startswith("[") and t.endswith("]"):
            return t
        return t[2:] if t.startswith("##") else "\u2581" + t
    return [one(t) for t in vocab]


def tiny_vocab() -> list[str]:
    """A WordPiece vocabulary of 101 pieces: the specials, letters, some words and suffixes."""
    words = ("the quick brown fox jumps over lazy dog an is of to and in it what tsne search query "
             "document hello world embedding model text vector").split()
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = [*SPECIALS, *letters, *words, *(f"##{c}" for c in letters), ".", ",", "?", "!", ":", "_"]
    pieces += [f"##{s}" for s in ("ing", "ed", "er")]
    assert len(set(pieces)) == len(pieces)
    return pieces + [f"[unused{i}]" for i in range(101 - len(pieces))]


def write_encoder_gguf(path: Path, arch: str, tensors: dict[str, np.ndarray], vocab: Sequence[str], *, n_heads: int,
                       eps: float, ctx: int, pooling: int = 1, rope_theta: float = 1000.0, f16: bool = False) -> Path:
    """An encoder GGUF as llama.cpp's converter writes one: matrices f16 when `f16` (vectors and
    the token types stay f32), a "bert" WordPiece vocabulary with [CLS] as BOS and [SEP]."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(path.stem)
    hid = tensors["token_embd.weight"].shape[1]
    layers = sum(1 for n in tensors if n.endswith(".attn_output.weight"))
    w.add_context_length(ctx)
    w.add_embedding_length(hid)
    w.add_block_count(layers)
    w.add_feed_forward_length(int(tensors["blk.0.ffn_up.weight"].shape[0]))
    w.add_head_count(n_heads)
    w.add_layer_norm_eps(eps)
    w.add_causal_attention(False)
    w.add_pooling_type(gguf.PoolingType(pooling))
    if arch == "nomic-bert":
        w.add_rope_freq_base(rope_theta)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if f16 else gguf.LlamaFileType.ALL_F32)
    w.add_tokenizer_model("bert")
    w.add_token_list(bert_gguf_tokens(vocab))
    control = gguf.TokenType.CONTROL
    w.add_token_types([control if t in SPECIALS else gguf.TokenType.NORMAL for t in vocab])
    ids = {t: i for i, t in enumerate(vocab)}
    w.add_bos_token_id(ids["[CLS]"])
    w.add_eos_token_id(ids["[SEP]"])
    w.add_sep_token_id(ids["[SEP]"])
    w.add_unk_token_id(ids["[UNK]"])
    w.add_pad_token_id(ids["[PAD]"])
    for name in sorted(tensors):
        data = np.asarray(tensors[name], np.float32)
        if f16 and data.ndim == 2 and name != "token_types.weight":
            data = data.astype(np.float16)
        w.add_tensor(name, np.ascontiguousarray(data))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def random_nomic_tensors(seed: int, vocab: int = 101, hidden: int = 72, heads: int = 3, ffn: int = 100,
                         layers: int = 2) -> dict[str, np.ndarray]:
    """A nomic-bert's tensors (GGUF names, fused QKV) with seeded O(1)-activation values;
    norms' weights and biases random too, so that a kernel ignoring one cannot pass."""
    rng = np.random.default_rng(seed)

    def mat(rows: int, k: int) -> np.ndarray:
        return (rng.standard_normal((rows, k)) / math.sqrt(k)).astype(np.float32)

    def norm(name: str) -> dict[str, np.ndarray]:
        return {name + ".weight": (1 + 0.2 * rng.standard_normal(hidden)).astype(np.float32),
                name + ".bias": (0.5 * rng.standard_normal(hidden)).astype(np.float32)}

    t: dict[str, np.ndarray] = {"token_embd.weight": rng.standard_normal((vocab, hidden)).astype(np.float32),
                                "token_types.weight": (0.5 * rng.standard_normal((2, hidden))).astype(np.float32),
                                **norm("token_embd_norm")}
    for i in range(layers):
        b = f"blk.{i}."
        t.update({b + "attn_qkv.weight": mat(3 * hidden, hidden), b + "attn_output.weight": mat(hidden, hidden),
                  b + "ffn_gate.weight": mat(ffn, hidden), b + "ffn_up.weight": mat(ffn, hidden),
                  b + "ffn_down.weight": mat(hidden, ffn), **norm(b + "attn_output_norm"),
                  **norm(b + "layer_output_norm")})
    return t


def minilm_tensors(model_dir: Path) -> dict[str, np.ndarray]:
    """all-MiniLM-L6-v2's tensors under GGUF names (as llama.cpp's converter names them)."""
    from safetensors.numpy import load_file

    from webgpu_llm.models.encoder import encoder_tensor_name

    out = {}
    for name, a in load_file(str(model_dir / "model.safetensors")).items():
        g = encoder_tensor_name("bert", name)
        if g is not None:
            out[g] = a
    return out


def make_tiny_encoder_dir(path: Path, arch: str, seed: int, pooling: str | None = None,
                          normalize: bool = False, hidden: int = 36, heads: int = 3, ffn: int = 44,
                          layers: int = 2, positions: int = 72) -> Any:
    """A tiny random transformers BertModel or NomicBertModel (odd sizes: hidden 36 of 3 heads
    of 12, FFN 44, vocabulary 101) saved as a safetensors directory with a WordPiece
    tokenizer.json and, with `pooling` (mean, cls, lasttoken), sentence-transformers' files
    (modules.json, the Pooling module's config and, with `normalize`, a Normalize module).
    Its weights are redrawn at O(1) activations, LayerNorms included, so that a kernel that
    ignores one cannot pass. Returns the model (float32, eval)."""
    import json

    import torch
    import transformers

    torch.manual_seed(seed)
    common = dict(vocab_size=101, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=ffn, max_position_embeddings=positions, type_vocab_size=2, layer_norm_eps=1e-12)
    if arch == "bert":
        model = transformers.BertModel(transformers.BertConfig(**common), add_pooling_layer=False)
    else:
        model = transformers.NomicBertModel(transformers.NomicBertConfig(
            **common, rope_parameters={"rope_type": "default", "rope_theta": 1000.0}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layernorm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("weight") else 0.5 * torch.randn_like(p))
            elif "embeddings" in name:
                p.normal_(0, 0.5 if "token_type" in name or "position" in name else 1.0)
            elif p.ndim == 2:
                p.normal_(0, 1 / math.sqrt(p.shape[1]))
            else:
                p.normal_(0, 0.1)
    model.eval()
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path))
    (path / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n", encoding="utf-8")
    transformers.BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(str(path))
    if pooling is not None:
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
        (path / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
        (path / "1_Pooling").mkdir()
        modes = {f"pooling_mode_{m}": m == {"mean": "mean_tokens", "cls": "cls_token"}.get(pooling, pooling)
                 for m in ("cls_token", "mean_tokens", "max_tokens", "lasttoken")}
        (path / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": hidden, **modes}),
                                                        encoding="utf-8")
    return model


def hf_pooled(model: Any, ids: Sequence[int], pooling: str = "mean", normalize: bool = True) -> np.ndarray:
    """transformers' model's last hidden state for one text, pooled (mean, cls, last) and
    maybe L2-normalized, as sentence-transformers pools it (float64)."""
    import torch

    with torch.no_grad():
        h = model(input_ids=torch.tensor([list(ids)])).last_hidden_state[0].double()
    v = {"mean": h.mean(0), "cls": h[0], "last": h[-1]}[pooling]
    return (v / v.norm() if normalize else v).numpy()
