"""Build a Tokenizer from GGUF metadata, matching llama.cpp's tokenization."""

from __future__ import annotations

from webgpu_llm.errors import ModelFileError
from webgpu_llm.tokenizer.bpe_models import byte_level_bpe, sentencepiece_bpe
from webgpu_llm.tokenizer.byte_level import byte_level_to_bytes
from webgpu_llm.tokenizer.encoders import LlamaCppEncoder, WordPieceEncoder
from webgpu_llm.tokenizer.gguf_vocab import (
    BYTE,
    CONTROL,
    NORMAL,
    UNKNOWN,
    USER_DEFINED,
    GgufVocab,
    read_gguf_vocab,
    scalar,
)
from webgpu_llm.tokenizer.pretokenizers import pre_tokenizer_for
from webgpu_llm.tokenizer.special_split import SpecialSplitter, SpecialToken
from webgpu_llm.tokenizer.tokenizer import TextEncoder, Tokenizer
from webgpu_llm.tokenizer.wordpiece import WordPieceModel


def load_tokenizer_from_gguf(metadata: dict[str, object]) -> Tokenizer:
    """A Tokenizer for the vocabulary in GGUF metadata (key -> Python value)."""
    vocab = read_gguf_vocab(metadata)
    encoder: TextEncoder
    add_eos = add_sep = False
    if vocab.model == "bert":
        unk = vocab.special.get("unk")
        encoder = WordPieceEncoder(WordPieceModel(vocab.ids, unk), _special_splitter(vocab))
        add_bos = add_sep = True
        # Pieces are "▁word" / "ing": decoded text starts with a space, dropped as for SentencePiece.
        space_prefix = strip_first_space = True
    else:
        spm = vocab.model == "llama"
        if spm:
            unk = vocab.special.get("unk")
            model = sentencepiece_bpe(vocab.ids, vocab.scores, vocab.tokens[unk] if unk is not None else None)
            add_bos = True
            space_prefix = _get_bool(metadata, "tokenizer.ggml.add_space_prefix", True)
        else:
            pre = pre_tokenizer_for(vocab.pre)
            model = byte_level_bpe(vocab.ids, vocab.merges, pre)
            add_bos = pre.add_bos
            space_prefix = _get_bool(metadata, "tokenizer.ggml.add_space_prefix", False)
        encoder = LlamaCppEncoder(
            model, _special_splitter(vocab), sentencepiece=spm, space_prefix=space_prefix
        )
        strip_first_space = space_prefix
    add_bos = _get_bool(metadata, "tokenizer.ggml.add_bos_token", add_bos)
    add_eos = _get_bool(metadata, "tokenizer.ggml.add_eos_token", add_eos)
    add_sep = _get_bool(metadata, "tokenizer.ggml.add_sep_token", add_sep)
    bos_id, eos_id, sep_id = vocab.special["bos"], vocab.special["eos"], vocab.special["sep"]
    for flag, tid, name in ((add_bos, bos_id, "bos"), (add_eos, eos_id, "eos"), (add_sep, sep_id, "sep")):
        if flag and tid is None:
            raise ModelFileError(
                f"GGUF key tokenizer.ggml.add_{name}_token is true but the vocabulary has no "
                f"{name.upper()} token; the file is corrupt"
            )
    # llama.cpp appends EOS, then SEP, after the text when the vocabulary asks for them.
    end_ids = tuple(tid for flag, tid in ((add_eos, eos_id), (add_sep, sep_id)) if flag and tid is not None)
    named = {
        key.removeprefix("tokenizer.chat_template."): value
        for key, value in metadata.items()
        if key.startswith("tokenizer.chat_template.") and isinstance(value, str) and value.strip()
    }
    template = metadata.get("tokenizer.chat_template")
    return Tokenizer(
        encoder=encoder,
        tokens=vocab.tokens,
        build_pieces=lambda: _pieces(vocab),
        hidden_ids=frozenset(vocab.ids_of_type(CONTROL, UNKNOWN)),
        strip_first_space=strip_first_space,
        bos_id=bos_id,
        eos_id=eos_id,
        stop_ids=frozenset(vocab.eog_ids),
        add_bos=add_bos,
        chat_template=template if isinstance(template, str) and template.strip() else None,
        bos_text=vocab.tokens[bos_id] if bos_id is not None else "",
        eos_text=vocab.tokens[eos_id] if eos_id is not None else "",
        end_ids=end_ids,
        sep_id=sep_id,
        named_templates=named,
        special_texts=_special_texts(vocab),
    )


def _special_texts(vocab: GgufVocab) -> dict[str, str]:
    """unk_token, pad_token, ... for chat templates, where the vocabulary names them."""
    names = {"unk": "unk_token", "pad": "pad_token", "sep": "sep_token", "mask": "mask_token"}
    return {
        variable: vocab.tokens[tid]
        for key, variable in names.items()
        if (tid := vocab.special.get(key)) is not None
    }


def _special_splitter(vocab: GgufVocab) -> SpecialSplitter:
    specials = [
        SpecialToken(
            vocab.tokens[tid],
            tid,
            control=vocab.types[tid] != USER_DEFINED,
            rstrip=tid in vocab.rstrip_ids,
        )
        for tid in vocab.ids_of_type(CONTROL, USER_DEFINED, UNKNOWN)
    ]
    return SpecialSplitter(specials)


def _pieces(vocab: GgufVocab) -> list[bytes]:
    """The bytes each token decodes to, as llama.cpp's token_to_piece(special=True)."""
    spm = vocab.model in ("llama", "bert")  # both spell a space as ▁
    pieces: list[bytes] = []
    for text, kind in zip(vocab.tokens, vocab.types):
        if kind == NORMAL:
            if spm:
                piece = text.replace("▁", " ").encode("utf-8")
            else:
                as_bytes = byte_level_to_bytes(text)
                piece = as_bytes if as_bytes is not None else text.encode("utf-8")
        elif kind in (CONTROL, UNKNOWN, USER_DEFINED):
            piece = text.encode("utf-8")
        elif kind == BYTE:
            piece = _byte_token(text)
        else:  # unused / undefined: llama.cpp renders nothing
            piece = b""
        pieces.append(piece)
    return pieces


def _byte_token(text: str) -> bytes:
    # "<0x0A>" -> b"\n"
    try:
        return bytes([int(text[3:5], 16)])
    except ValueError:
        return text.encode("utf-8")


def _get_bool(md: dict[str, object], key: str, default: bool) -> bool:
    value = scalar(md.get(key))
    return bool(value) if isinstance(value, (bool, int)) else default
