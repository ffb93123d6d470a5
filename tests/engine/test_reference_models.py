"""Checks of the reference builders in tests/reference_models.py (the engine's tests rely on them)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from reference_models import (  # after the guards: its helpers need torch and transformers
    EOS_ID,
    TINY_SHAPE,
    hf_greedy,
    hf_logits,
    llama3_rope_freq_factors,
    make_tiny_gguf,
    make_tiny_llama,
    make_tiny_llama3,
    make_tiny_qwen2,
)

TEXT = "Bridges carry 1,000 cars a day over the river; the quick brown fox doesn't care!"
Builder = Callable[..., Path]


def _ids(model_dir: Path, text: str = TEXT) -> list[int]:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir / "tokenizer.json")).encode(text).ids


def _safetensors_header(model_dir: Path) -> dict:
    raw = (model_dir / "model.safetensors").read_bytes()
    return json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        "llama": make_tiny_llama(root / "llama", seed=1),
        "llama3": make_tiny_llama3(root / "llama3", seed=1),
        "qwen2": make_tiny_qwen2(root / "qwen2", seed=1),
        "llama_f16": make_tiny_llama(root / "llama_f16", seed=1, dtype="float16"),
        "qwen2_f16": make_tiny_qwen2(root / "qwen2_f16", seed=1, dtype="float16"),
    }


def test_files_and_config(models: dict[str, Path]) -> None:
    for name, d in models.items():
        for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            assert (d / f).is_file(), (name, f)
        cfg = json.loads((d / "config.json").read_text())
        assert cfg["vocab_size"] == 1001 and cfg["hidden_size"] == 72 and cfg["num_key_value_heads"] == 1
    tensors = _safetensors_header(models["qwen2"])
    assert "model.layers.0.self_attn.q_proj.bias" in tensors
    assert "lm_head.weight" not in tensors  # tied
    assert "lm_head.weight" in _safetensors_header(models["llama"])
    assert _safetensors_header(models["llama_f16"])["model.norm.weight"]["dtype"] == "F16"


def test_tokenizer_vocab_and_template(models: dict[str, Path]) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    d = models["llama"]
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    assert tok.get_vocab_size() == TINY_SHAPE["vocab_size"]
    ids = tok.encode(TEXT).ids
    assert max(ids) < TINY_SHAPE["vocab_size"] and tok.decode(ids) == TEXT
    hf_tok = AutoTokenizer.from_pretrained(d)
    assert hf_tok(TEXT, add_special_tokens=False).input_ids == ids
    chat = hf_tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert hf_tok.convert_tokens_to_ids("<|im_end|>") == EOS_ID


def test_logits_are_causal_and_sane(models: dict[str, Path]) -> None:
    for name, d in models.items():
        ids = _ids(d)
        full = hf_logits(d, ids)
        assert full.shape == (len(ids), TINY_SHAPE["vocab_size"]) and full.dtype == np.float32
        assert np.isfinite(full).all()
        assert 0.5 < full.std() < 10, name  # neither flat nor saturated
        np.testing.assert_allclose(hf_logits(d, ids[:7]), full[:7], rtol=1e-4, atol=1e-4)


def test_same_seed_same_model(tmp_path: Path, models: dict[str, Path]) -> None:
    again = make_tiny_llama(tmp_path / "again", seed=1)
    other = make_tiny_llama(tmp_path / "other", seed=2)
    ids = _ids(again)
    np.testing.assert_array_equal(hf_logits(again, ids), hf_logits(models["llama"], ids))
    assert not np.allclose(hf_logits(other, ids), hf_logits(again, ids))


def test_llama3_rope_changes_only_later_positions(models: dict[str, Path]) -> None:
    ids = _ids(models["llama"])
    plain, scaled = hf_logits(models["llama"], ids), hf_logits(models["llama3"], ids)
    # same seed, same weights: position 0 has no rotation, later positions see the scaled rope
    np.testing.assert_allclose(plain[0], scaled[0], rtol=1e-5, atol=1e-5)
    assert np.abs(plain[5:] - scaled[5:]).max() > 1e-2
    cfg = json.loads((models["llama3"] / "config.json").read_text())
    rope = cfg.get("rope_parameters") or cfg["rope_scaling"]  # transformers 5 / 4 spelling
    assert rope["rope_type"] == "llama3"
    factors = llama3_rope_freq_factors(24, 10000.0, rope)
    assert factors[0] == 1.0 and factors[-1] == 8.0 and ((factors > 1) & (factors < 8)).any()


def test_greedy_runs(models: dict[str, Path]) -> None:
    ids = _ids(models["qwen2"])[:5]
    out = hf_greedy(models["qwen2"], ids, 4)
    assert len(out) == 4 and all(0 <= t < TINY_SHAPE["vocab_size"] for t in out)
    assert out[0] == int(hf_logits(models["qwen2"], ids)[-1].argmax())


@pytest.mark.parametrize(
    ("name", "arch", "ftype"),
    [
        ("llama", "llama", "f32"),
        ("llama_f16", "llama", "f16"),
        ("llama3", "llama", "f32"),
        ("qwen2", "qwen2", "f32"),
    ],
)
def test_gguf_layout(tmp_path: Path, models: dict[str, Path], name: str, arch: str, ftype: str) -> None:
    import gguf

    path = make_tiny_gguf(tmp_path / f"{name}.gguf", models[name])
    reader = gguf.GGUFReader(path)
    assert reader.fields["general.architecture"].contents() == arch
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.1.attn_q.weight"] == ftype.upper() and types["blk.0.attn_norm.weight"] == "F32"
    assert ("output.weight" in types) == (name != "qwen2")  # qwen2 ties the head to token_embd
    assert ("rope_freqs.weight" in types) == (name == "llama3")
    assert ("blk.0.attn_k.bias" in types) == (arch == "qwen2")
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == TINY_SHAPE["vocab_size"]


@pytest.mark.parametrize("name", ["llama", "llama_f16", "llama3", "qwen2", "qwen2_f16"])
def test_gguf_matches_transformers_in_llama_cpp(tmp_path: Path, models: dict[str, Path], name: str) -> None:
    """llama.cpp on our GGUF vs transformers on the HF dir: validates the GGUF writer (names, Q/K
    permutation, rope factors, tokenizer) independently of our engine."""
    llama_cpp = pytest.importorskip("llama_cpp")
    d = models[name]
    path = make_tiny_gguf(tmp_path / f"{name}.gguf", d)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=128, logits_all=True, n_threads=2, verbose=False)
    ids = _ids(d, TEXT * 3)[:100]
    assert llm.tokenize((TEXT * 3).encode(), add_bos=False, special=False)[:100] == ids
    llm.eval(ids)
    got = np.array(llm.scores[: len(ids)], dtype=np.float64)
    ref = hf_logits(d, ids).astype(np.float64)
    rel = np.linalg.norm(got - ref, axis=1) / np.linalg.norm(ref, axis=1)
    # llama.cpp keeps K/V in f16 (and rounds activations to f16 for f16 weights): ~1e-4..1e-3
    assert rel.max() < 3e-3, rel.max()
    assert (got.argmax(1) == ref.argmax(1)).mean() > 0.97
