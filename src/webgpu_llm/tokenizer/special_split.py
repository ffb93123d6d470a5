"""Split text on special tokens the way llama.cpp does before running the tokenizer model.

llama.cpp (tokenizer_st_partition) takes the special tokens longest first and cuts every
raw-text piece at each occurrence of the current token. Control and unknown tokens are only
recognised when parse_special is on; user-defined tokens always are.
"""

from __future__ import annotations

from dataclasses import dataclass

# llama.cpp strips with C isspace(): ASCII whitespace only.
_ASCII_SPACE = " \t\n\v\f\r"


@dataclass(frozen=True)
class SpecialToken:
    text: str
    id: int
    control: bool  # control or unknown: only recognised with parse_special
    lstrip: bool = False  # eat whitespace to the left of the token
    rstrip: bool = False  # eat whitespace to the right of the token


Piece = str | int  # raw text, or the id of a special token


class SpecialSplitter:
    def __init__(self, tokens: list[SpecialToken]) -> None:
        # Longest first, by UTF-8 length as llama.cpp sorts (ties keep vocabulary order).
        self._tokens = sorted(tokens, key=lambda t: -len(t.text.encode("utf-8")))

    def split(self, text: str, parse_special: bool) -> list[Piece]:
        pieces: list[Piece] = [text] if text else []
        for tok in self._tokens:
            if tok.control and not parse_special:
                continue
            if tok.text not in text:  # cheap test on the whole text first
                continue
            pieces = self._cut(pieces, tok)
        return pieces

    @staticmethod
    def _cut(pieces: list[Piece], tok: SpecialToken) -> list[Piece]:
        out: list[Piece] = []
        for piece in pieces:
            if isinstance(piece, int) or tok.text not in piece:
                out.append(piece)
                continue
            parts = piece.split(tok.text)
            for i, part in enumerate(parts):
                if i > 0:
                    out.append(tok.id)
                    if tok.rstrip:
                        part = part.lstrip(_ASCII_SPACE)
                if i < len(parts) - 1 and tok.lstrip:
                    part = part.rstrip(_ASCII_SPACE)
                if part:
                    out.append(part)
        return out
