"""Embeddings per second of a batch of texts on the engine, beside sentence-transformers on the
CPU in the same call.

Protocol: a batch of N texts (64 in the issue's figure) embedded in one call, one warm-up
excluded, median of the runs; the engine's time covers writing the batch's tables, its
submits and reading the vectors back, not tokenization (the peer's neither). A model file
embeds N sentences of 6 to ~45 words (`sentences`); a preset (a real model's shape with seeded
random weights, for machines the files cannot reach) takes N texts of token ids of 8 to 40
tokens (`preset_lengths`), and its peer is sentence-transformers over transformers' model of the
same shape (random weights too), handed the same ids as one padded batch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..engine.encoder import Encoder
from ..engine.settings import Settings
from ..errors import UserError
from ..models.encoder import EncoderConfig
from ..models.presets import RandomTensor, file_type
from ..runtime.gpu import Gpu

EMBED_PRESETS: dict[str, dict[str, Any]] = {
    "all-minilm-l6-v2": dict(arch="bert", n_layers=6, hidden=384, intermediate=1536, n_heads=12, head_dim=32,
                             vocab=30522, max_tokens=256, norm_eps=1e-12, pooling="mean", normalize=True,
                             positions=512),
    "nomic-embed-text-v1.5": dict(arch="nomic-bert", n_layers=12, hidden=768, intermediate=3072, n_heads=12,
                                  head_dim=64, vocab=30522, max_tokens=2048, norm_eps=1e-12, pooling="mean",
                                  normalize=True, rope_theta=1000.0),
}

_WORDS = ("the model turns each text into a vector so that texts with similar meaning lie close together "
          "while unrelated ones point elsewhere and a search compares a query with every document it "
          "holds by their cosine which is one dot product of normalized vectors").split()


def sentences(n: int) -> list[str]:
    """N English-like sentences of 6 to ~45 words (deterministic)."""
    out = []
    for i in range(n):
        k = 6 + (i * 13) % 40
        out.append(" ".join(_WORDS[(i * 7 + j * 3) % len(_WORDS)] for j in range(k)).capitalize() + ".")
    return out


def preset_lengths(n: int) -> list[int]:
    """Token counts of a preset's N texts: 8 to 40 (mean about 24)."""
    return [8 + (i * 7) % 33 for i in range(n)]


def preset_encoder(name: str, dtype: str, seed: int = 0) -> tuple[EncoderConfig, dict[str, RandomTensor]]:
    """An embedding model's shape with seeded random weights (matrices in `dtype`, or the type
    a file would hold where its rows do not fit dtype's blocks)."""
    if name not in EMBED_PRESETS:
        raise UserError(f"unknown embedding preset {name!r}: choose one of {', '.join(EMBED_PRESETS)}")
    c = EncoderConfig(name=f"{name} ({dtype}, random)", **EMBED_PRESETS[name])
    rng = np.random.default_rng(seed)
    t: dict[str, RandomTensor] = {}

    def mat(tname: str, rows: int, k: int, fmt: str | None = None) -> None:
        f = fmt or file_type(dtype, k)
        s = int(rng.integers(1 << 30))

        def make() -> np.ndarray:
            from ..models.presets import random_weight

            return random_weight(f, rows, k, np.random.default_rng(s), scale=0.05)

        t[tname] = RandomTensor(tname, f, (rows, k), make)

    def vec(tname: str, n: int, value: float) -> None:
        t[tname] = RandomTensor(tname, "f32", (n,), lambda: np.full(n, value, np.float32))

    h = c.hidden
    mat("token_embd.weight", c.vocab, h)
    mat("token_types.weight", 2, h, "f32")
    if c.arch == "bert":
        mat("position_embd.weight", c.positions, h, "f32")
    vec("token_embd_norm.weight", h, 1.0)
    vec("token_embd_norm.bias", h, 0.0)
    for i in range(c.n_layers):
        b = f"blk.{i}."
        if c.arch == "bert":
            for x in "qkv":
                mat(b + f"attn_{x}.weight", h, h)
                vec(b + f"attn_{x}.bias", h, 0.0)
        else:
            mat(b + "attn_qkv.weight", 3 * h, h)
        mat(b + "attn_output.weight", h, h)
        if c.gated:
            mat(b + "ffn_gate.weight", c.intermediate, h)
        mat(b + "ffn_up.weight", c.intermediate, h)
        mat(b + "ffn_down.weight", h, c.intermediate)
        for nm in ("attn_output_norm", "layer_output_norm"):
            vec(b + nm + ".weight", h, 1.0)
            vec(b + nm + ".bias", h, 0.0)
        if c.bias:
            vec(b + "attn_output.bias", h, 0.0)
            vec(b + "ffn_up.bias", c.intermediate, 0.0)
            vec(b + "ffn_down.bias", h, 0.0)
    return c, t


def _median_rate(run: Callable[[], None], reps: int) -> float:
    """Median seconds of `run` over `reps` runs after one warm-up."""
    run()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_embed(gpu: Gpu, cfg: EncoderConfig, tensors: dict[str, Any], settings: Settings, ids: Sequence[Sequence[int]],
                reps: int = 5, log: Any = None) -> dict[str, Any]:
    """Texts (token ids) embedded in one call on the engine: seconds, texts/s, tokens/s."""
    say = log or (lambda *_: None)
    longest = max(len(x) for x in ids)
    say(f"building {cfg.name} on {gpu.name}")
    enc = Encoder.build(gpu, cfg, tensors.get, settings, min(cfg.max_tokens, max(longest, 2)))
    enc.embed(ids[:1])  # compile
    runs = len(enc.runs([len(x) for x in ids]))
    s = _median_rate(lambda: enc.embed(ids), reps)
    tokens = sum(len(x) for x in ids)
    say(f"  {len(ids)} texts ({tokens} tokens, {runs} run(s)) in {s * 1e3:.1f} ms")
    return {"model": cfg.name, "backend": gpu.backend, "adapter": gpu.info.get("device", ""), "texts": len(ids),
            "tokens": tokens, "runs": runs, "dispatches": len(enc.programs.program), "ms": s * 1e3,
            "texts_s": len(ids) / s, "tokens_s": tokens / s}


def bench_sentence_transformers(model_dir: str, texts: list[str], reps: int = 5, log: Any = None) -> dict[str, Any]:
    """sentence-transformers' encode of the texts on the CPU, as one batch (tokenization excluded)."""
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model_dir, device="cpu")
    # sentence-transformers 6 renamed tokenize to preprocess (the old name warns)
    features = (st.preprocess if hasattr(st, "preprocess") else st.tokenize)(texts)

    def run() -> None:
        with torch.inference_mode():
            st.forward(dict(features))

    s = _median_rate(run, reps)
    tokens = int(features["attention_mask"].sum())
    if log:
        log(f"  sentence-transformers (CPU, {torch.get_num_threads()} threads): {s * 1e3:.1f} ms")
    return {"peer": "sentence-transformers (CPU)", "dtype": "f32", "texts": len(texts), "tokens": tokens, "ms": s * 1e3,
            "texts_s": len(texts) / s, "tokens_s": tokens / s, "threads": torch.get_num_threads()}


def bench_sentence_transformers_preset(cfg: EncoderConfig, ids: Sequence[Sequence[int]], reps: int = 5,
                                       log: Any = None) -> dict[str, Any]:
    """A preset's peer: sentence-transformers on the CPU (float32) over transformers' model of the
    preset's shape (random weights), mean pooling and normalization, handed the same texts as
    token ids in one padded batch with its attention mask (tokenization excluded, as for a file)."""
    import tempfile
    from pathlib import Path

    import torch
    import transformers

    try:
        from sentence_transformers import SentenceTransformer
        try:  # sentence-transformers 6 moved the modules (the old path warns)
            from sentence_transformers.sentence_transformer import modules as models
        except ImportError:
            from sentence_transformers import models  # type: ignore[no-redef]
    except ImportError:
        raise UserError("--peers sentence-transformers: the package is not installed (pip install "
                        "sentence-transformers)") from None
    common = dict(vocab_size=cfg.vocab, hidden_size=cfg.hidden, num_hidden_layers=cfg.n_layers,
                  num_attention_heads=cfg.n_heads, intermediate_size=cfg.intermediate, layer_norm_eps=cfg.norm_eps)
    if cfg.arch == "bert":  # with the pooler, as a real checkpoint has it (sentence-transformers ignores it)
        model: Any = transformers.BertModel(transformers.BertConfig(max_position_embeddings=cfg.positions, **common))
    else:
        model = transformers.NomicBertModel(transformers.NomicBertConfig(
            max_position_embeddings=cfg.max_tokens, rope_parameters={"rope_type": "default",
                                                                     "rope_theta": cfg.rope_theta}, **common))
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        # a vocabulary of the model's size for the Transformer module to load: it is given ids, never text
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(cfg.vocab - 5)]
        (Path(d) / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        transformers.BertTokenizerFast(vocab_file=str(Path(d) / "vocab.txt")).save_pretrained(d)
        st = SentenceTransformer(modules=[models.Transformer(d), models.Pooling(cfg.hidden, cfg.pooling),
                                          *([models.Normalize()] if cfg.normalize else [])], device="cpu")
    n = max(len(x) for x in ids)
    input_ids = torch.zeros((len(ids), n), dtype=torch.long)
    mask = torch.zeros((len(ids), n), dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, : len(x)] = torch.tensor(list(x))
        mask[i, : len(x)] = 1
    features = {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(input_ids)}

    def run() -> None:
        with torch.inference_mode():
            st.forward(dict(features))

    s = _median_rate(run, reps)
    tokens = sum(len(x) for x in ids)
    if log:
        log(f"  sentence-transformers (CPU, {torch.get_num_threads()} threads, random weights): {s * 1e3:.1f} ms")
    return {"peer": "sentence-transformers (CPU)", "dtype": "f32", "texts": len(ids), "tokens": tokens,
            "ms": s * 1e3, "texts_s": len(ids) / s, "tokens_s": tokens / s, "threads": torch.get_num_threads()}


def embed_markdown(rows: list[dict[str, Any]], peers: list[dict[str, Any]]) -> str:
    lines = ["| model | dtype | backend | texts | tokens | runs | ms | texts/s | tokens/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r.get('dtype', '-')} | {r['backend']} | {r['texts']} | {r['tokens']} | {r['runs']} | {r['ms']:.1f} | "
                     f"{r['texts_s']:.1f} | {r['tokens_s']:.0f} |")
    for p in peers:
        lines.append(f"| {p['peer']} | {p['dtype']} | {p['threads']} threads | {p['texts']} | {p['tokens']} | - | {p['ms']:.1f} | "
                     f"{p['texts_s']:.1f} | {p['tokens_s']:.0f} |")
    return "\n".join(lines)
