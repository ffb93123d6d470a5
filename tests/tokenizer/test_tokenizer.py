"""Tokenizer, chat template and streaming tests.

GGUF vocabularies are checked against llama.cpp's token ids stored in
tests/fixtures/tokenizer_*.json (regenerate with tests/fixtures/make_tokenizer_fixtures.py):
SmolLM2's, every supported pre-tokenizer on it, a trained SentencePiece vocabulary and the same
pieces in Gemma's layout; tokenizer.json directories against Hugging Face tokenizers itself.
llama.cpp's own test vectors are in test_llama_cpp_vocabs.py, the model families' tokenizer.json
pipelines in test_tokenizer_json.py and their chat templates in test_chat_templates.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HfTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from model_files import smollm2_or_skip
from webgpu_llm.errors import ModelFileError, UserError
from webgpu_llm.tokenizer import StreamDecoder, Tokenizer, load_tokenizer_from_dir, load_tokenizer_from_gguf
from webgpu_llm.tokenizer.chat_template import ChatTemplate

FIXTURES = Path(__file__).parents[1] / "fixtures"


def read_gguf_metadata(path: Path) -> dict[str, object]:
    """GGUF key -> Python value, as the package's GGUF reader hands them over."""
    import gguf

    reader = gguf.GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


@cache
def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def smollm2_metadata() -> dict[str, object]:
    return read_gguf_metadata(smollm2_or_skip())


@pytest.fixture(scope="session")
def smollm2(smollm2_metadata: dict[str, object]) -> Tokenizer:
    return load_tokenizer_from_gguf(smollm2_metadata)


SMOLLM2_CASES = _fixture("tokenizer_smollm2.json")["cases"]


def _case_id(case: dict) -> str:
    return repr(case["text"])[:40]


# -- SmolLM2 (byte-level BPE) against llama.cpp --------------------------------------------------


@pytest.mark.parametrize("case", SMOLLM2_CASES, ids=_case_id)
def test_smollm2_encode_matches_llama_cpp(smollm2: Tokenizer, case: dict) -> None:
    text = case["text"]
    assert smollm2.encode(text, add_bos=False, parse_special=True) == case["ids_special"]
    assert smollm2.encode(text, add_bos=False, parse_special=False) == case["ids_plain"]
    assert smollm2.encode(text) == case["ids_default"]


@pytest.mark.parametrize("case", SMOLLM2_CASES, ids=_case_id)
def test_smollm2_decode_matches_llama_cpp(smollm2: Tokenizer, case: dict) -> None:
    assert smollm2.decode(case["ids_default"], skip_special=False) == case["decoded_special"]
    assert smollm2.decode(case["ids_default"]) == case["decoded_plain"]
    # byte-level BPE loses nothing: decoding gives the text back
    assert smollm2.decode(smollm2.encode(case["text"]), skip_special=False) == case["text"]
    assert smollm2.decode(smollm2.encode(case["text"], parse_special=False)) == case["text"]


def _pieces_digest(tok: Tokenizer, skip_special: bool) -> str:
    digest = hashlib.sha256()
    for tid in range(tok.vocab_size):
        piece = tok.piece(tid, skip_special)
        digest.update(len(piece).to_bytes(4, "little") + piece)
    return digest.hexdigest()


def test_smollm2_vocabulary_facts(smollm2: Tokenizer) -> None:
    info = _fixture("tokenizer_smollm2.json")
    # every token decodes to the bytes llama.cpp's token_to_piece gives
    assert _pieces_digest(smollm2, skip_special=False) == info["pieces_sha256_special"]
    assert _pieces_digest(smollm2, skip_special=True) == info["pieces_sha256_plain"]
    assert smollm2.vocab_size == info["vocab_size"]
    assert (smollm2.bos_id, smollm2.eos_id, smollm2.add_bos) == (
        info["bos_id"],
        info["eos_id"],
        info["add_bos"],
    )
    assert smollm2.stop_ids == frozenset(info["eog_ids"])
    assert {smollm2.token_text(i) for i in smollm2.stop_ids} >= {"<|im_end|>", "<|endoftext|>"}
    assert smollm2.token_text(1) == "<|im_start|>"
    assert smollm2.has_chat_template


def test_smollm2_loads_fast(smollm2_metadata: dict[str, object]) -> None:
    # CPU time, so that a busy CI machine does not fail the test; it takes ~0.2 s on one core.
    start = time.process_time()
    tok = load_tokenizer_from_gguf(smollm2_metadata)
    tok.encode("warm up")
    assert time.process_time() - start < 1.0


def test_warm_up_builds_what_the_first_answer_would(smollm2_metadata: dict[str, object]) -> None:
    """A server's warm-up: the decode table is built once, by warm_up and not by the first
    decode, and the chat template is compiled; decoding and rendering are unchanged."""
    tok = load_tokenizer_from_gguf(smollm2_metadata)
    ids = tok.encode("Hello, world! ünïcödé")
    builds: list[int] = []
    build = tok._build_pieces
    tok._build_pieces = lambda: builds.append(1) or build()
    tok.warm_up()
    assert builds == [1] and tok._template is not None and tok._template._compiled is not None
    assert tok.decode(ids) == "Hello, world! ünïcödé" and builds == [1]
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]).endswith("<|im_start|>assistant\n")


# -- every supported pre-tokenizer, on the SmolLM2 vocabulary ------------------------------------

PRETYPES = _fixture("tokenizer_pretypes.json")


@pytest.mark.parametrize("pre", sorted(PRETYPES["pre_types"]))
def test_pre_tokenizer_matches_llama_cpp(smollm2_metadata: dict[str, object], pre: str) -> None:
    expected = PRETYPES["pre_types"][pre]
    md = {**smollm2_metadata, "tokenizer.ggml.pre": pre}
    del md["tokenizer.ggml.add_bos_token"]
    tok = load_tokenizer_from_gguf(md)
    assert (tok.add_bos, tok.bos_id) == (expected["add_bos"], expected["bos_id"])
    mismatches = [
        (text, ids)
        for text, ids in zip(PRETYPES["texts"], expected["ids"])
        if tok.encode(text, add_bos=False) != ids
    ]
    assert not mismatches, f"{len(mismatches)} texts differ, first: {mismatches[0][0]!r}"


def test_unknown_pre_tokenizer_is_named(smollm2_metadata: dict[str, object]) -> None:
    with pytest.raises(ModelFileError, match="'no-such-pre'"):
        load_tokenizer_from_gguf({**smollm2_metadata, "tokenizer.ggml.pre": "no-such-pre"})


# -- SentencePiece ("llama") vocabulary against llama.cpp ------------------------------------------

SPM = _fixture("tokenizer_spm.json")
# Gemma's layout of a SentencePiece vocabulary: <pad>/<eos>/<bos>/<unk> first, control turn
# markers, user-defined whitespace runs and tags, byte fallback, no space prefix; the
# "embeddinggemma" variant also appends <eos> (tokenizer.ggml.add_eos_token).
GEMMA = _fixture("tokenizer_gemma.json")
SPM_FILES = {"spm": SPM, "gemma": GEMMA}
SPM_VARIANTS = {
    f"{file}:{name}": (data, v) for file, data in SPM_FILES.items() for name, v in data["variants"].items()
}
SPM_CASES = [(variant, case) for variant, (_, v) in SPM_VARIANTS.items() for case in v["cases"]]


@cache
def spm_tokenizer(variant: str) -> Tokenizer:
    if ":" not in variant:
        variant = f"spm:{variant}"
    data, v = SPM_VARIANTS[variant]
    md = {
        "tokenizer.ggml.tokens": data["tokens"],
        "tokenizer.ggml.token_type": data["token_type"],
        **data["base_metadata"],
        **v["metadata"],
    }
    return load_tokenizer_from_gguf(md)


@pytest.mark.parametrize(("variant", "case"), SPM_CASES, ids=[f"{n}-{_case_id(c)}" for n, c in SPM_CASES])
def test_spm_encode_decode_match_llama_cpp(variant: str, case: dict) -> None:
    tok = spm_tokenizer(variant)
    text = case["text"]
    assert tok.encode(text, add_bos=False, parse_special=True) == case["ids_special"]
    assert tok.encode(text, add_bos=False, parse_special=False) == case["ids_plain"]
    assert tok.encode(text) == case["ids_default"]
    assert tok.decode(case["ids_default"], skip_special=False) == case["decoded_special"]
    assert tok.decode(case["ids_default"]) == case["decoded_plain"]


@pytest.mark.parametrize("variant", sorted(SPM_VARIANTS))
def test_spm_vocabulary_facts(variant: str) -> None:
    tok, info = spm_tokenizer(variant), SPM_VARIANTS[variant][1]
    assert _pieces_digest(tok, skip_special=False) == info["pieces_sha256_special"]
    assert _pieces_digest(tok, skip_special=True) == info["pieces_sha256_plain"]
    assert tok.vocab_size == info["vocab_size"]
    assert (tok.bos_id, tok.eos_id, tok.add_bos) == (info["bos_id"], info["eos_id"], info["add_bos"])
    assert tok.stop_ids == frozenset(info["eog_ids"])


def test_gemma_chat_prompt_ids_match_llama_cpp() -> None:
    # Gemma 3's template writes <bos> itself; the tokenizer adds BOS, so the rendered text
    # drops it and encode() puts exactly one back: llama.cpp's ids for the rendered text.
    data, variant = SPM_VARIANTS["gemma:gemma3"]
    template = (FIXTURES / "chat_templates" / "gemma3.jinja").read_text(encoding="utf-8")
    md = {
        "tokenizer.ggml.tokens": data["tokens"],
        "tokenizer.ggml.token_type": data["token_type"],
        **data["base_metadata"],
        **variant["metadata"],
        "tokenizer.chat_template": template,
    }
    tok = load_tokenizer_from_gguf(md)
    messages = [
        {"role": "system", "content": "You are brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    text = tok.apply_chat_template(messages, add_generation_prompt=False)
    case = next(c for c in variant["cases"] if c["text"] == "<bos>" + text)
    assert tok.encode(text) == case["ids_special"]
    assert tok.encode(text).count(tok.bos_id) == 1
    assert tok.token_text(tok.bos_id) == "<bos>" and tok.token_text(tok.eos_id) == "<eos>"
    assert tok.end_ids == () and tok.encode("x")[-1] != tok.eos_id  # Gemma 3 adds no EOS
    embed = spm_tokenizer("gemma:embeddinggemma")
    assert embed.encode("x")[-1] == embed.eos_id and embed.end_ids == (embed.eos_id,)
    end_of_turn = tok.encode("<end_of_turn>", add_bos=False)
    assert len(end_of_turn) == 1 and end_of_turn[0] in tok.stop_ids


def _spm_text_back(text: str, user_defined: list[str]) -> str:
    """What decode(encode(text)) gives on a SentencePiece vocabulary with add_space_prefix, as
    llama.cpp does it: raw text after a user-defined token (split off even without
    parse_special) gets the space prefix too, and a literal ▁ is a space."""
    parts = re.split("(" + "|".join(map(re.escape, sorted(user_defined, key=len, reverse=True))) + ")", text)
    out, after_special = [], False
    for part in parts:
        if part in user_defined:
            out.append(part)
            after_special = True
        elif part:
            out.append((" " if after_special else "") + part)
            after_special = False
    return "".join(out).replace("▁", " ")


@pytest.mark.parametrize("case", SPM["variants"]["rank_scores"]["cases"], ids=_case_id)
def test_spm_roundtrip(case: dict) -> None:
    tok, text = spm_tokenizer("rank_scores"), case["text"]
    user_defined = [t for t, kind in zip(SPM["tokens"], SPM["token_type"]) if kind == 4]
    assert user_defined == ["<tool>", "</tool>"]
    # skip_special=False: without parse_special, text like "<|im_end|>" can still merge into
    # the control token (llama.cpp does the same), which then has to be shown.
    back = tok.decode(tok.encode(text, add_bos=False, parse_special=False), skip_special=False)
    assert back == _spm_text_back(text, user_defined)
    if not any(t in text for t in [*user_defined, "▁"]):
        assert back == text


# -- streaming ------------------------------------------------------------------------------------


def _stream(tok: Tokenizer, ids: list[int], prompt: list[int] | None = None) -> list[str]:
    dec = StreamDecoder(tok, prompt)
    return [dec.push(i) for i in ids] + [dec.flush()]


def test_stream_holds_back_split_characters(smollm2: Tokenizer) -> None:
    ids = smollm2.encode("🙂👍🏽 ok")
    assert len(ids) > 3  # each emoji is several byte tokens
    chunks = _stream(smollm2, ids)
    assert "".join(chunks) == "🙂👍🏽 ok"
    assert all("\ufffd" not in c for c in chunks)
    assert "" in chunks  # some tokens finish no character


def test_stream_spm_byte_fallback_and_leading_space() -> None:
    tok = spm_tokenizer("rank_scores")
    ids = tok.encode("龍 Hello", add_bos=False)  # 龍 is not in the vocabulary: three byte tokens
    assert [tok.token_text(i) for i in ids[:4]] == ["▁", "<0xE9>", "<0xBE>", "<0x8D>"]
    chunks = _stream(tok, ids)
    assert chunks[:4] == ["", "", "", "龍"]  # the space of the first word is dropped
    assert "".join(chunks) == "龍 Hello"
    # after a prompt the space in front of the first generated word is real text
    prompt = tok.encode("Say")
    assert "".join(_stream(tok, tok.encode("Hello", add_bos=False), prompt)) == " Hello"
    assert "".join(_stream(tok, tok.encode("Hello", add_bos=False), [tok.bos_id])) == "Hello"


@pytest.mark.parametrize("case", SMOLLM2_CASES[:60], ids=_case_id)
def test_stream_equals_decode(smollm2: Tokenizer, case: dict) -> None:
    ids = case["ids_default"]
    for cut in (0, len(ids) // 2):
        prompt, generated = ids[:cut], ids[cut:]
        all_bytes = b"".join(smollm2.piece(i) for i in ids)
        # The prompt may end inside a character: the stream owns that whole character.
        prompt_chars = b"".join(smollm2.piece(i) for i in prompt).decode("utf-8", "ignore")
        expected = all_bytes[len(prompt_chars.encode()) :].decode("utf-8", "replace")
        assert "".join(_stream(smollm2, generated, prompt)) == expected


@settings(max_examples=300, deadline=None)
@given(text=st.text("a é龍🙂👍🏽\n", max_size=8), extra=st.lists(st.integers(0, 400), max_size=3),
       cut=st.integers(0, 30), spm=st.booleans())
def test_stream_after_a_prompt_equals_the_whole_prompts_state(smollm2: Tokenizer, text: str, extra: list[int],
                                                               cut: int, spm: bool) -> None:
    """The decoder takes over a prompt's state from its last bytes: the text of the rest
    equals that of a decoder fed every piece of the prompt, at any cut (characters split
    over byte-level BPE tokens or SentencePiece byte tokens, its leading-space rule, control
    and other tokens between)."""
    tok = spm_tokenizer("rank_scores") if spm else smollm2
    ids = tok.encode(text, add_bos=False) + [i % tok.vocab_size for i in extra]
    prompt, generated = ids[:cut], ids[cut:]
    whole = StreamDecoder(tok)
    for t in prompt:
        whole.push(t)
    expected = [whole.push(t) for t in generated] + [whole.flush()]
    assert _stream(tok, generated, prompt) == expected


def test_stream_finishes_a_character_the_prompt_started(smollm2: Tokenizer) -> None:
    ids = smollm2.encode("🙂")  # one character, two byte-level tokens
    assert len(ids) == 2
    assert _stream(smollm2, ids[1:], ids[:1]) == ["🙂", ""]
    assert _stream(smollm2, ids[:1]) == ["", "\ufffd"]  # cut short: flush gives U+FFFD


def test_stream_skips_control_tokens(smollm2: Tokenizer) -> None:
    im_end = smollm2.encode("<|im_end|>")[0]
    assert _stream(smollm2, [im_end]) == ["", ""]
    dec = StreamDecoder(smollm2, skip_special=False)
    assert dec.push(im_end) == "<|im_end|>"


# -- chat templates ---------------------------------------------------------------------------------

CHAT_CASES = _fixture("tokenizer_smollm2.json")["chat"]


@pytest.mark.parametrize("case", CHAT_CASES, ids=lambda c: repr(c["expected"])[:30])
def test_chat_template_matches_transformers(smollm2: Tokenizer, case: dict) -> None:
    if case["template"] == "<gguf>":
        rendered = smollm2.apply_chat_template(case["messages"], case["add_generation_prompt"])
    else:
        template = ChatTemplate(case["template"], case["bos_token"], case["eos_token"])
        rendered = template.render(case["messages"], case["add_generation_prompt"])
    assert rendered == case["expected"]


def test_smollm2_chat_prompt() -> None:
    expected = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert CHAT_CASES[0]["messages"] == [{"role": "user", "content": "Hi"}]
    assert CHAT_CASES[0]["expected"] == expected


def test_chat_template_helpers_and_errors() -> None:
    year = ChatTemplate("{{ strftime_now('%Y') }}").render([])
    assert year == time.strftime("%Y")
    with pytest.raises(ModelFileError, match="refused these messages: only user") as err:
        ChatTemplate("{{ raise_exception('only user turns') }}").render([{"role": "user", "content": "x"}])
    assert "\n" not in str(err.value)
    with pytest.raises(ModelFileError, match="not valid Jinja"):
        ChatTemplate("{% for m in messages %}").render([])
    with pytest.raises(ModelFileError, match="failed on these messages"):
        ChatTemplate("{{ messages[0].content + 1 }}").render([{"role": "user", "content": "x"}])
    with pytest.raises(ModelFileError, match="list of dicts"):
        ChatTemplate("x").render("hello")  # type: ignore[arg-type]


def test_chat_template_bos_is_not_doubled() -> None:
    # A template that writes BOS itself, as Llama 2's does, on a vocabulary that adds BOS.
    md = {
        "tokenizer.ggml.tokens": SPM["tokens"],
        "tokenizer.ggml.token_type": SPM["token_type"],
        **SPM["base_metadata"],
        **SPM["variants"]["rank_scores"]["metadata"],
        "tokenizer.chat_template": "{{ bos_token }}{{ messages[0]['content'] }}",
    }
    tok = load_tokenizer_from_gguf(md)
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert text == "Hi"
    assert tok.encode(text).count(tok.bos_id) == 1
    with pytest.raises(UserError, match="no chat template"):
        spm_tokenizer("rank_scores").apply_chat_template([{"role": "user", "content": "Hi"}])


# -- tokenizer.json directories, against Hugging Face tokenizers ----------------------------------

TEMPLATE = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
CORPUS = [c["text"] for c in SMOLLM2_CASES] * 2


def _byte_level_bpe() -> HfTokenizer:
    tok = HfTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<s>", "</s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return tok


def _spm_like_bpe() -> HfTokenizer:
    # The shape of Llama 2 / Mistral tokenizer.json files: ▁ for spaces, <0xXX> byte fallback.
    tok = HfTokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=800, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens], show_progress=False
    )
    tok.train_from_iterator([c for c in CORPUS if "日" not in c], trainer)
    return tok


def _write_dir(path: Path, tok: HfTokenizer, config: dict, generation: dict | None = None) -> Path:
    path.mkdir()
    tok.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(config))
    if generation is not None:
        (path / "generation_config.json").write_text(json.dumps(generation))
    return path


@pytest.mark.parametrize("kind", ["byte_level", "spm_like"])
def test_tokenizer_json_matches_tokenizers(tmp_path: Path, kind: str) -> None:
    hf = _byte_level_bpe() if kind == "byte_level" else _spm_like_bpe()
    config = {
        "bos_token": "<s>",
        "eos_token": {"content": "</s>", "special": True},
        "chat_template": TEMPLATE,
    }
    tok = load_tokenizer_from_dir(_write_dir(tmp_path / kind, hf, config, {"eos_token_id": [1, 2]}))
    assert tok.vocab_size == hf.get_vocab_size()
    assert tok.bos_id == hf.token_to_id("<s>") and tok.eos_id == hf.token_to_id("</s>")
    assert tok.add_bos == (kind == "byte_level")  # only that one's post-processor adds <s>
    for case in SMOLLM2_CASES:
        text = case["text"]
        expected = hf.encode(text, add_special_tokens=True).ids
        assert tok.encode(text) == expected, text
        assert tok.decode(expected) == hf.decode(expected), text
        assert tok.decode(expected, skip_special=False) == hf.decode(expected, skip_special_tokens=False), (
            text
        )
    assert tok.apply_chat_template([{"role": "user", "content": "Hi"}]) == "<|im_start|>user\nHi<|im_end|>\n"


def test_tokenizer_json_specials_and_stops(tmp_path: Path) -> None:
    hf = _byte_level_bpe()
    config = {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": False, "chat_template": TEMPLATE}
    tok = load_tokenizer_from_dir(_write_dir(tmp_path / "d", hf, config))
    im_start, im_end = hf.token_to_id("<|im_start|>"), hf.token_to_id("<|im_end|>")
    assert not tok.add_bos  # tokenizer_config.json overrides the post-processor
    assert tok.stop_ids == {hf.token_to_id("</s>"), im_end}
    assert tok.encode("<|im_start|>hi")[0] == im_start
    literal = tok.encode("<|im_start|>hi", parse_special=False)
    assert im_start not in literal and tok.decode(literal) == "<|im_start|>hi"
    assert tok.decode([im_start, im_end]) == ""


def test_tokenizer_json_bos_eos_fallbacks(tmp_path: Path) -> None:
    hf = _byte_level_bpe()
    path = _write_dir(tmp_path / "d", hf, {}, {"eos_token_id": hf.token_to_id("<|im_end|>")})
    (path / "special_tokens_map.json").write_text(json.dumps({"bos_token": {"content": "<s>"}}))
    tok = load_tokenizer_from_dir(path)
    assert tok.bos_id == hf.token_to_id("<s>")
    assert tok.eos_id == hf.token_to_id("<|im_end|>")
    assert not tok.has_chat_template


def test_tokenizer_json_chat_template_file_wins(tmp_path: Path) -> None:
    path = _write_dir(tmp_path / "d", _byte_level_bpe(), {"chat_template": "config"})
    (path / "chat_template.jinja").write_text("file")
    assert load_tokenizer_from_dir(path).chat_template == "file"


def test_tokenizer_dir_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a directory"):
        load_tokenizer_from_dir(tmp_path / "missing")
    with pytest.raises(ModelFileError, match=r"no tokenizer\.json"):
        load_tokenizer_from_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="cannot read"):
        load_tokenizer_from_dir(tmp_path)


# -- bad GGUF metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({}, "tokenizer.ggml.model is missing"),
        ({"tokenizer.ggml.model": "t5"}, r"'t5'.*not supported.*'bert' \(WordPiece\)"),
        ({"tokenizer.ggml.model": "llama"}, "tokenizer.ggml.tokens is missing"),
        ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a", "a"]}, "duplicate token 'a'"),
        ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": "abc"}, "should be an array"),
        (
            {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"]},
            "tokenizer.ggml.merges is missing",
        ),
        (
            {
                "tokenizer.ggml.model": "llama",
                "tokenizer.ggml.tokens": ["a", "b"],
                "tokenizer.ggml.token_type": [1],
            },
            "1 entries for 2 tokens",
        ),
    ],
)
def test_bad_gguf_vocabulary(metadata: dict, message: str) -> None:
    with pytest.raises(ModelFileError, match=message):
        load_tokenizer_from_gguf(metadata)


def test_decode_rejects_ids_outside_the_vocabulary(smollm2: Tokenizer) -> None:
    with pytest.raises(UserError, match="outside the vocabulary"):
        smollm2.decode([smollm2.vocab_size])
    with pytest.raises(UserError, match="outside the vocabulary"):
        smollm2.token_text(-1)
