"""tokenizer.json of each model family's tokenizer type, built here with `tokenizers`, read by
load_tokenizer_from_dir and checked against `tokenizers` itself: ids with and without the
special tokens the post-processor adds, decoded text, BOS/EOS/SEP and stop tokens.

The pipelines follow the published tokenizer.json files of each family: BERT's WordPiece
(BertNormalizer lowercasing and stripping accents, or not for cased models; [CLS] $A [SEP]),
Qwen2/Qwen3's byte-level BPE (NFC, their split regex, no BOS), Llama 3's (its regex,
<|begin_of_text|> in front) and Gemma's SentencePiece BPE (spaces as ▁, byte fallback, <bos>).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HfTokenizer

from webgpu_llm.tokenizer import load_tokenizer_from_dir
from webgpu_llm.tokenizer.pretokenizers import PRE_TOKENIZERS

FIXTURES = Path(__file__).parents[1] / "fixtures"
TEXTS: list[str] = json.loads((FIXTURES / "tokenizer_pretypes.json").read_text(encoding="utf-8"))["texts"]
TEXTS += [
    "Äpfel, Cửa Việt and İstanbul: ÉCOLE naïve",
    "[CLS] already here [SEP] and [MASK]",
    "<start_of_turn>user\nHi<end_of_turn>\n<|im_start|>x<|im_end|><|begin_of_text|>",
    "don't ' s do not 're 've",
]
CORPUS = [t for t in TEXTS if "日" not in t] * 2

# tokenizer.json regexes of the byte-level families (llama.cpp's qwen2 / llama-bpe ones are the
# same up to its spelling of the (?i:...) group, checked in test_regexes_are_llama_cpps)
QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _train(tok: HfTokenizer, trainer: trainers.Trainer) -> HfTokenizer:
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def bert(lowercase: bool) -> tuple[HfTokenizer, dict]:
    tok = HfTokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=None)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    _train(tok, trainers.WordPieceTrainer(vocab_size=700, special_tokens=specials, show_progress=False))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    config = {
        "do_lower_case": lowercase,
        "cls_token": "[CLS]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "mask_token": "[MASK]",
    }
    return tok, config


def byte_level(regex: str, bos: str | None, specials: list[str]) -> HfTokenizer:
    tok = HfTokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(regex), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    _train(tok, trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def qwen2() -> tuple[HfTokenizer, dict]:
    tok = byte_level(QWEN2_REGEX, None, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return tok, {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None}


def llama3() -> tuple[HfTokenizer, dict]:
    tok = byte_level(
        LLAMA3_REGEX, "<|begin_of_text|>", ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    )
    return tok, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}


def gemma() -> tuple[HfTokenizer, dict]:
    tok = HfTokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    _train(
        tok,
        trainers.BpeTrainer(vocab_size=900, special_tokens=[*specials, *byte_tokens], show_progress=False),
    )
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return tok, {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}


KINDS: dict[str, Callable[[], tuple[HfTokenizer, dict]]] = {
    "bert_uncased": lambda: bert(lowercase=True),
    "bert_cased": lambda: bert(lowercase=False),
    "qwen2": qwen2,
    "llama3": llama3,
    "gemma": gemma,
}


def _write(path: Path, tok: HfTokenizer, config: dict) -> Path:
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_tokenizer_json_matches_tokenizers(tmp_path: Path, kind: str) -> None:
    hf, config = KINDS[kind]()
    tok = load_tokenizer_from_dir(_write(tmp_path / kind, hf, config))
    assert tok.vocab_size == hf.get_vocab_size()
    mismatches = []
    for text in TEXTS:
        framed = hf.encode(text, add_special_tokens=True).ids
        bare = hf.encode(text, add_special_tokens=False).ids
        got = (tok.encode(text), tok.encode(text, add_bos=False))
        decoded = (tok.decode(framed), tok.decode(framed, skip_special=False))
        expected = (hf.decode(framed), hf.decode(framed, skip_special_tokens=False))
        if got != (framed, bare) or decoded != expected:
            mismatches.append((text, got, (framed, bare), decoded, expected))
    assert not mismatches, f"{len(mismatches)} of {len(TEXTS)} differ, first: {mismatches[0]}"


def test_bert_frame_and_specials(tmp_path: Path) -> None:
    hf, config = bert(lowercase=True)
    tok = load_tokenizer_from_dir(_write(tmp_path / "bert", hf, config))
    cls, sep, unk = (hf.token_to_id(t) for t in ("[CLS]", "[SEP]", "[UNK]"))
    assert (tok.bos_id, tok.sep_id, tok.end_ids, tok.add_bos) == (cls, sep, (sep,), True)
    ids = tok.encode("Äpfel ☃")
    assert ids[0] == cls and ids[-1] == sep and unk in ids  # no piece spells the emoji
    assert tok.decode(tok.encode("Hello, World!")) == "hello, world!"
    assert tok.encode("hi", add_bos=False, add_eos=True)[-1] == sep


def test_padding_and_truncation_of_the_file_are_ignored(tmp_path: Path) -> None:
    """A tokenizer.json that pads every text to a fixed length and truncates it (as
    sentence-transformers' all-MiniLM-L6-v2 ships) still gives each text its own ids."""
    hf, config = bert(lowercase=True)
    plain = hf.encode("Hello, World! " * 3, add_special_tokens=True).ids
    hf.enable_padding(length=64, pad_id=hf.token_to_id("[PAD]"), pad_token="[PAD]")
    hf.enable_truncation(max_length=6)
    tok = load_tokenizer_from_dir(_write(tmp_path / "padded", hf, config))
    assert (tok.bos_id, tok.end_ids) == (hf.token_to_id("[CLS]"), (hf.token_to_id("[SEP]"),))
    assert tok.encode("Hello, World! " * 3) == plain


def test_qwen2_and_llama3_stops_and_bos(tmp_path: Path) -> None:
    hf, config = qwen2()
    tok = load_tokenizer_from_dir(_write(tmp_path / "qwen", hf, config))
    assert (tok.bos_id, tok.add_bos, tok.end_ids) == (None, False, ())
    assert tok.stop_ids >= {hf.token_to_id("<|im_end|>"), hf.token_to_id("<|endoftext|>")}
    hf, config = llama3()
    tok = load_tokenizer_from_dir(_write(tmp_path / "llama", hf, config))
    assert (tok.bos_id, tok.add_bos, tok.end_ids) == (hf.token_to_id("<|begin_of_text|>"), True, ())
    assert tok.stop_ids >= {hf.token_to_id("<|eot_id|>"), hf.token_to_id("<|end_of_text|>")}


def test_regexes_are_llama_cpps() -> None:
    # llama.cpp's strings (src/llama-vocab.cpp, LLAMA_VOCAB_PRE_TYPE_LLAMA3 and _QWEN2), which
    # spell the tokenizer.json's (?i:'s|...) group out case by case
    contractions = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
    rest = r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    assert PRE_TOKENIZERS["llama-bpe"].regexes == (contractions + rest,)
    assert PRE_TOKENIZERS["qwen2"].regexes == (contractions + rest.replace(r"\p{N}{1,3}", r"\p{N}"),)
    assert LLAMA3_REGEX.removeprefix("(?i:'s|'t|'re|'ve|'m|'ll|'d)") == rest
    assert PRE_TOKENIZERS["llama-bpe"].ignore_merges and not PRE_TOKENIZERS["qwen2"].ignore_merges
