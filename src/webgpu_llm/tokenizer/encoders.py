"""Text -> ids for the two sources of vocabularies (both without BOS; Tokenizer adds it)."""

from __future__ import annotations

from tokenizers import Tokenizer as HfTokenizer

from webgpu_llm.tokenizer.special_split import SpecialSplitter
from webgpu_llm.tokenizer.wordpiece import WordPieceModel


class LlamaCppEncoder:
    """llama.cpp's llama_tokenize for GGUF vocabularies: split off special tokens, then run
    the BPE model on each raw-text piece separately."""

    def __init__(
        self, model: HfTokenizer, splitter: SpecialSplitter, sentencepiece: bool, space_prefix: bool
    ) -> None:
        self._model = model
        self._splitter = splitter
        self._sentencepiece = sentencepiece
        self._space_prefix = space_prefix

    def encode(self, text: str, parse_special: bool) -> list[int]:
        ids: list[int] = []
        after_special = True  # the start of the text counts as "after a special token"
        for piece in self._splitter.split(text, parse_special):
            if isinstance(piece, int):
                ids.append(piece)
                after_special = True
                continue
            if self._sentencepiece:
                # SentencePiece sees words as "▁word"; llama.cpp adds the leading space at the
                # start of the text and after every special token.
                if self._space_prefix and after_special:
                    piece = " " + piece
                piece = piece.replace(" ", "▁")
            ids.extend(self._model.encode(piece, add_special_tokens=False).ids)
            after_special = False
        return ids


class WordPieceEncoder:
    """llama.cpp's llama_tokenize for GGUF BERT vocabularies: special tokens split off, then
    WordPiece on each raw-text piece."""

    def __init__(self, model: WordPieceModel, splitter: SpecialSplitter) -> None:
        self._model = model
        self._splitter = splitter

    def encode(self, text: str, parse_special: bool) -> list[int]:
        ids: list[int] = []
        for piece in self._splitter.split(text, parse_special):
            if isinstance(piece, int):
                ids.append(piece)
            else:
                ids.extend(self._model.encode(piece))
        return ids


class HfEncoder:
    """A tokenizer.json pipeline run as Hugging Face runs it (added tokens included)."""

    def __init__(self, tok: HfTokenizer) -> None:
        self._tok = tok
        self._literal: HfTokenizer | None = None

    def encode(self, text: str, parse_special: bool) -> list[int]:
        tok = self._tok if parse_special else self._literal_specials()
        return tok.encode(text, add_special_tokens=False).ids

    def _literal_specials(self) -> HfTokenizer:
        # A copy that reads special added tokens as plain text (normal added tokens still
        # match, as in llama.cpp); a copy, so the shared tokenizer is never mutated.
        if self._literal is None:
            literal = HfTokenizer.from_str(self._tok.to_str())
            literal.encode_special_tokens = True
            self._literal = literal
        return self._literal
