"""Build a Tokenizer from a Hugging Face model directory (tokenizer.json and its configs)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tokenizers import Tokenizer as HfTokenizer

from webgpu_llm.errors import ModelFileError, UserError
from webgpu_llm.tokenizer.byte_level import byte_level_to_bytes
from webgpu_llm.tokenizer.encoders import HfEncoder
from webgpu_llm.tokenizer.gguf_vocab import EOG_TEXTS
from webgpu_llm.tokenizer.tokenizer import Tokenizer

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def load_tokenizer_from_dir(path: str | os.PathLike) -> Tokenizer:
    """A Tokenizer for tokenizer.json in `path`, with tokenizer_config.json (chat template,
    BOS/EOS, add_bos_token) and generation_config.json (extra EOS ids) when present."""
    root = Path(path)
    if not root.is_dir():
        raise UserError(
            f"{root} is not a directory; give a Hugging Face model directory with a tokenizer.json"
        )
    file = root / "tokenizer.json"
    if not file.is_file():
        raise ModelFileError(
            f"{root} has no tokenizer.json; use a model directory that includes its tokenizer"
        )
    try:
        tok = HfTokenizer.from_file(str(file))
    except Exception as e:
        raise ModelFileError(f"cannot read {file}: {' '.join(str(e).split())}") from None
    # a tokenizer.json may pad or truncate every text to a fixed length (sentence-transformers'
    # all-MiniLM-L6-v2 pads to 128): ids are a text's own, and lengths are the engine's business
    tok.no_padding()
    tok.no_truncation()
    config = _read_json(root / "tokenizer_config.json")
    generation = _read_json(root / "generation_config.json")
    special_map = _read_json(root / "special_tokens_map.json")  # older repositories keep BOS/EOS here

    vocab = tok.get_vocab(with_added_tokens=True)
    tokens = [""] * (max(vocab.values(), default=-1) + 1)
    for text, tid in vocab.items():
        tokens[tid] = text
    added = tok.get_added_tokens_decoder()
    bos_text = _token_content(config.get("bos_token", special_map.get("bos_token")))
    eos_text = _token_content(config.get("eos_token", special_map.get("eos_token")))
    bos_id = tok.token_to_id(bos_text) if bos_text else None
    eos_id = tok.token_to_id(eos_text) if eos_text else None
    generation_eos = _int_list(generation.get("eos_token_id"))
    if eos_id is None and generation_eos and 0 <= generation_eos[0] < len(tokens):
        eos_id = generation_eos[0]
        eos_text = tokens[eos_id]
    stop = {eos_id, *generation_eos}
    stop |= {tid for tid, t in added.items() if t.special and t.content in EOG_TEXTS}
    prefix, suffix = _post_processor_frame(tok)
    if bos_id is None and len(prefix) == 1:
        bos_id = prefix[0]  # BERT's [CLS]: what llama.cpp calls BOS there
    add_bos = config.get("add_bos_token")
    if not isinstance(add_bos, bool):
        add_bos = bos_id is not None and prefix == [bos_id]
    add_eos = config.get("add_eos_token")
    end_ids = (
        tuple(suffix)
        if not isinstance(add_eos, bool)
        else (eos_id,)
        if add_eos and eos_id is not None
        else ()
    )
    special_texts = {
        name: text
        for name in ("unk_token", "pad_token", "sep_token", "cls_token", "mask_token")
        if (text := _token_content(config.get(name, special_map.get(name))))
    }
    sep_id = tok.token_to_id(special_texts["sep_token"]) if "sep_token" in special_texts else None
    template, named = _chat_templates(root, config)
    rules = _DecodeRules.of(tok)
    return Tokenizer(
        encoder=HfEncoder(tok),
        tokens=tokens,
        build_pieces=lambda: rules.pieces(tok, tokens),
        hidden_ids=frozenset(tid for tid, t in added.items() if t.special),
        strip_first_space=rules.strip_first_space,
        bos_id=bos_id,
        eos_id=eos_id,
        stop_ids=frozenset(i for i in stop if i is not None and 0 <= i < len(tokens)),
        add_bos=add_bos and bos_id is not None,
        chat_template=template,
        bos_text=bos_text or "",
        eos_text=eos_text or "",
        end_ids=end_ids,
        sep_id=sep_id,
        named_templates=named,
        special_texts=special_texts,
    )


class _DecodeRules:
    """How the tokenizer.json decoder turns one token into bytes, for the decoders LLMs use."""

    def __init__(
        self,
        byte_level: bool,
        metaspace: bool,
        byte_fallback: bool,
        strip_first_space: bool,
        known: bool,
        wordpiece: dict | None = None,
    ):
        self.byte_level = byte_level
        self.metaspace = metaspace
        self.byte_fallback = byte_fallback
        self.strip_first_space = strip_first_space
        self.known = known
        self.wordpiece = wordpiece  # the WordPiece decoder's settings (prefix, cleanup)

    @classmethod
    def of(cls, tok: HfTokenizer) -> _DecodeRules:
        state = json.loads(tok.decoder.__getstate__()) if tok.decoder is not None else None
        steps = (
            []
            if state is None
            else state.get("decoders", [state])
            if state["type"] == "Sequence"
            else [state]
        )
        kinds = {s["type"] for s in steps}
        metaspace = any(
            s["type"] == "Metaspace"
            or (
                s["type"] == "Replace"
                and s.get("pattern", {}).get("String") == "▁"
                and s.get("content") == " "
            )
            for s in steps
        )
        strip = any(
            (s["type"] == "Strip" and s.get("content") == " " and s.get("start", 0) >= 1)
            or (
                s["type"] == "Metaspace"
                and s.get("prepend_scheme", "always") != "never"
                and s.get("add_prefix_space", True)
            )
            for s in steps
        )
        wordpiece = next((s for s in steps if s["type"] == "WordPiece"), None)
        if wordpiece is not None and len(steps) > 1:
            wordpiece = None  # WordPiece inside a sequence: leave it to tokenizers
        strip = strip or wordpiece is not None  # every word but the first gets a space in front
        known = not (kinds - {"ByteLevel", "Metaspace", "Replace", "ByteFallback", "Fuse", "Strip"}) or (
            wordpiece is not None
        )
        return cls("ByteLevel" in kinds, metaspace, "ByteFallback" in kinds, strip, known, wordpiece)

    def pieces(self, tok: HfTokenizer, tokens: list[str]) -> list[bytes]:
        if not self.known:
            # An unusual decoder: ask tokenizers for each token on its own.
            texts = tok.decode_batch([[i] for i in range(len(tokens))], skip_special_tokens=False)
            return [t.encode("utf-8") for t in texts]
        # tokenizers runs added tokens through the decoder too, so one rule fits all.
        return [self._piece(text) for text in tokens]

    def _piece(self, text: str) -> bytes:
        if self.wordpiece is not None:
            # tokenizers' WordPiece decoder: "##ing" joins the word before it, any other token
            # is a new word after a space; with cleanup, each token's " ." / " 's" / ... loses
            # its space (token by token, as tokenizers does it).
            prefix = self.wordpiece.get("prefix", "##")
            text = text[len(prefix) :] if prefix and text.startswith(prefix) else " " + text
            if self.wordpiece.get("cleanup", True):
                text = _wordpiece_cleanup(text)
            return text.encode("utf-8")
        if self.byte_level:
            as_bytes = byte_level_to_bytes(text)
            if as_bytes is not None:
                return as_bytes
        if self.byte_fallback and (m := _BYTE_TOKEN.fullmatch(text)):
            return bytes([int(m.group(1), 16)])
        if self.metaspace:
            text = text.replace("▁", " ")
        return text.encode("utf-8")


def _wordpiece_cleanup(text: str) -> str:
    for dirty, clean in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" do not", " don't"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(dirty, clean)
    return text


def _post_processor_frame(tok: HfTokenizer) -> tuple[list[int], list[int]]:
    """The ids the post-processor puts before and after a text ([CLS] and [SEP] for BERT,
    <s> for Llama 2): easiest to see by running it."""
    for probe in ("a", "hello", "0", "."):  # a text the vocabulary spells with some token
        bare = tok.encode(probe, add_special_tokens=False).ids
        if not bare:
            continue
        framed = tok.encode(probe, add_special_tokens=True).ids
        for start in range(len(framed) - len(bare) + 1):
            if framed[start : start + len(bare)] == bare:
                return framed[:start], framed[start + len(bare) :]
    return [], []


def _chat_templates(root: Path, config: dict) -> tuple[str | None, dict[str, str]]:
    """The default chat template and the named others (e.g. "tool_use")."""
    # transformers' order: chat_template.jinja, chat_template.json, then tokenizer_config.json.
    jinja_file = root / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8"), {}
    template = _read_json(root / "chat_template.json").get("chat_template", config.get("chat_template"))
    named: dict[str, str] = {}
    if isinstance(template, list):  # named templates: [{"name": "default", "template": "..."}, ...]
        named = {
            t["name"]: t["template"]
            for t in template
            if isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("template"), str)
        }
        template = named.pop("default", None)
    return (template if isinstance(template, str) and template.strip() else None), named


def _read_json(file: Path) -> dict:
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFileError(f"cannot read {file}: {' '.join(str(e).split())}") from None
    return data if isinstance(data, dict) else {}


def _token_content(value: object) -> str | None:
    if isinstance(value, dict):  # an AddedToken written out: {"content": "<s>", ...}
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _int_list(value: object) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return []
