"""llama.cpp's WordPiece tokenizer for GGUF BERT vocabularies (`tokenizer.ggml.model == "bert"`).

The GGUF converter rewrites a BERT vocabulary for it: a word-initial piece "hello" is stored as
"▁hello" and a continuation "##ing" as "ing" ([CLS]-style tokens keep their text). llama.cpp
then tokenizes each raw-text piece (special tokens are split off before) in two steps:

1. Words: every code point is replaced by the first code point of its NFD decomposition (so
   accents on precomposed letters go away, "Ä" -> "A"), lower-cased (simple case mapping),
   dropped when it is NUL, U+FFFD or a control/format character, and the text is cut at
   whitespace; punctuation, ASCII symbols and CJK ideographs become words of their own.
2. Pieces: "▁" + word is covered greedily by the longest vocabulary entry at each position;
   a word with a position no entry starts at becomes one unknown token.

Tokenizer.json BERT vocabularies do not come here: Hugging Face `tokenizers` runs them.
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

# Unicode White_Space, as llama.cpp's table lists it.
_WHITESPACE = frozenset(
    [
        *range(0x09, 0x0E),
        0x20,
        0x85,
        0xA0,
        0x1680,
        *range(0x2000, 0x200B),
        0x2028,
        0x2029,
        0x202F,
        0x205F,
        0x3000,
    ]
)
_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),  # sic: Hugging Face's range, which llama.cpp copies
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

_SPACE, _SKIP, _ALONE, _PART = 0, 1, 2, 3


@lru_cache(maxsize=65536)
def _classify(ch: str) -> tuple[int, str]:
    """What llama.cpp's WPM preprocessing does with one code point, and its replacement."""
    base = unicodedata.normalize("NFD", ch)[0]
    cp = ord(base)
    if cp in _WHITESPACE:
        return _SPACE, ""
    category = unicodedata.category(base)
    if cp in (0, 0xFFFD) or category in ("Cc", "Cf", "Co", "Cs"):
        return _SKIP, ""
    lower = "i" if cp == 0x130 else base.lower()  # simple lower-case mapping: one code point
    if len(lower) != 1:
        lower = base
    if category[0] == "P" or (cp < 0x7F and category[0] == "S") or any(lo <= cp <= hi for lo, hi in _CJK):
        return _ALONE, lower
    return _PART, lower


def wpm_words(text: str) -> list[str]:
    """The words llama.cpp's WordPiece preprocessing cuts `text` into."""
    words: list[str] = []
    current: list[str] = []
    for ch in text:
        kind, out = _classify(ch)
        if kind == _PART:
            current.append(out)
        elif kind == _ALONE:
            if current:
                words.append("".join(current))
                current = []
            words.append(out)
        elif kind == _SPACE and current:
            words.append("".join(current))
            current = []
    if current:
        words.append("".join(current))
    return words


class WordPieceModel:
    """Greedy longest-match over "▁" + word, as llama.cpp's llm_tokenizer_wpm_session."""

    def __init__(self, ids: dict[str, int], unk_id: int | None) -> None:
        self._ids = ids
        self._unk = unk_id
        self._max_len = max(map(len, ids), default=1)

    def encode(self, text: str) -> list[int]:
        out: list[int] = []
        ids, max_len = self._ids, self._max_len
        for word in wpm_words(text):
            word = "▁" + word
            n = len(word)
            start = len(out)
            i = 0
            while i < n:
                for j in range(min(n, i + max_len), i, -1):
                    tid = ids.get(word[i:j])
                    if tid is not None:
                        out.append(tid)
                        i = j
                        break
                else:  # no entry starts here: the whole word is unknown
                    del out[start:]
                    break
            if len(out) == start and self._unk is not None:
                out.append(self._unk)
        return out
