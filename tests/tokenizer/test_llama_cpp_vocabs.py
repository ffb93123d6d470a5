"""Our GGUF tokenizers against llama.cpp's own tokenizer test vectors.

tests/fixtures/vocab/ holds the tokenizer-only GGUFs of llama.cpp's models/ folder that come
with test vectors (README.md there says where from): byte-level BPE with ten pre-tokenizers
(Llama 3's llama-bpe and Qwen2's among them), SentencePiece (Llama 2, Phi-3) and WordPiece
(BERT). For each text, our ids must equal llama.cpp's (no BOS/EOS, special tokens not parsed,
as llama.cpp's test-tokenizer-0 runs them).
"""

from __future__ import annotations

import hashlib
import json
import lzma
from functools import cache
from pathlib import Path

import pytest

from webgpu_llm.models.gguf_file import read_gguf
from webgpu_llm.tokenizer import Tokenizer, load_tokenizer_from_gguf

VOCAB = Path(__file__).parents[1] / "fixtures" / "vocab"
NAMES = sorted(p.name.removesuffix(".gguf.xz").removeprefix("ggml-vocab-") for p in VOCAB.glob("*.gguf.xz"))
MODELS = {
    "bert-bge": "bert",
    "command-r": "gpt2",
    "deepseek-coder": "gpt2",
    "deepseek-llm": "gpt2",
    "falcon": "gpt2",
    "gpt-2": "gpt2",
    "llama-bpe": "gpt2",
    "llama-spm": "llama",
    "mpt": "gpt2",
    "phi-3": "llama",
    "qwen2": "gpt2",
    "refact": "gpt2",
    "starcoder": "gpt2",
}


def _vectors(name: str) -> list[tuple[str, list[int]]]:
    stem = VOCAB / f"ggml-vocab-{name}.gguf"
    texts = stem.with_suffix(".gguf.inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    outs = stem.with_suffix(".gguf.out").read_text(encoding="utf-8").split("\n")
    assert len(outs) >= len(texts)
    return [(text, [int(t) for t in out.split()]) for text, out in zip(texts, outs)]


CASES = [(name, i) for name in NAMES for i in range(len(_vectors(name)))]


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("vocab")


@cache
def _metadata(name: str, folder: Path) -> dict[str, object]:
    """The GGUF's metadata as the engine reads a model file's."""
    path = folder / f"{name}.gguf"
    path.write_bytes(lzma.decompress((VOCAB / f"ggml-vocab-{name}.gguf.xz").read_bytes()))
    with read_gguf(path) as file:
        return dict(file.metadata)


@cache
def _tokenizer(name: str, folder: Path) -> Tokenizer:
    return load_tokenizer_from_gguf(_metadata(name, folder))


def test_every_vocabulary_with_vectors_is_here() -> None:
    assert NAMES == sorted(MODELS)
    assert all(len(_vectors(name)) == 47 for name in NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_tokenizer_model(name: str, unpacked: Path) -> None:
    assert _metadata(name, unpacked)["tokenizer.ggml.model"] == MODELS[name]


@pytest.mark.parametrize(("name", "index"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_ids_match_llama_cpp(name: str, index: int, unpacked: Path) -> None:
    text, expected = _vectors(name)[index]
    tok = _tokenizer(name, unpacked)
    assert tok.encode(text, add_bos=False, parse_special=False) == expected
    if MODELS[name] == "gpt2":  # byte-level BPE loses nothing
        assert tok.decode(expected) == text


def test_bert_frame_and_special_tokens(unpacked: Path) -> None:
    tok = _tokenizer("bert-bge", unpacked)
    cls, sep = tok.token_text(tok.bos_id), tok.token_text(tok.sep_id)  # type: ignore[arg-type]
    assert (cls, sep, tok.add_bos, tok.end_ids) == ("[CLS]", "[SEP]", True, (tok.sep_id,))
    hello = tok.encode("Hello world", add_bos=False)
    assert hello == [7592, 2088]
    assert tok.encode("Hello world") == [tok.bos_id, 7592, 2088, tok.sep_id]
    # [CLS]/[SEP] in the text are control tokens: read as such only with parse_special
    assert tok.encode("[SEP] hi", add_bos=False) == [tok.sep_id, 7632]
    assert tok.sep_id not in tok.encode("[SEP] hi", add_bos=False, parse_special=False)
    assert tok.decode(tok.encode("Hello, world!")) == "hello , world !"
    # llama.cpp spells control tokens as they are, without the space WordPiece words get
    assert tok.decode(tok.encode("Hello world"), skip_special=False) == "[CLS] hello world[SEP]"


# -- BERT's WordPiece on many more texts: tests/fixtures/tokenizer_bert.json, llama.cpp's ids
# (made by tests/fixtures/make_tokenizer_fixtures.py) for the shared texts, BERT's corner cases
# (case mappings, combining marks, controls, CJK and symbol splits) and random Unicode text

BERT = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "tokenizer_bert.json").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("case", BERT["cases"], ids=lambda c: repr(c["text"])[:30])
def test_bert_matches_llama_cpp(case: dict, unpacked: Path) -> None:
    tok, text = _tokenizer("bert-bge", unpacked), case["text"]
    assert tok.encode(text, add_bos=False, parse_special=True) == case["ids_special"]
    assert tok.encode(text, add_bos=False, parse_special=False) == case["ids_plain"]
    assert tok.encode(text) == case["ids_default"]  # [CLS] ... [SEP]
    assert tok.decode(case["ids_default"], skip_special=False) == case["decoded_special"]
    assert tok.decode(case["ids_default"]) == case["decoded_plain"]


def test_bert_vocabulary_facts(unpacked: Path) -> None:
    tok = _tokenizer("bert-bge", unpacked)
    assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.add_bos) == (
        BERT["vocab_size"],
        BERT["bos_id"],
        BERT["eos_id"],
        BERT["add_bos"],
    )
    # llama.cpp since 0.3.16 (the build that made the fixture) also takes "[PAD]" for the FIM
    # pad token, which ends generation; gguf_vocab follows the newer list.
    assert tok.stop_ids == frozenset(BERT["eog_ids"]) | {0}
    assert tok.token_text(0) == "[PAD]"
    for skip, key in ((False, "pieces_sha256_special"), (True, "pieces_sha256_plain")):
        digest = hashlib.sha256()
        for tid in range(tok.vocab_size):
            piece = tok.piece(tid, skip)
            digest.update(len(piece).to_bytes(4, "little") + piece)
        assert digest.hexdigest() == BERT[key]
