"""Incremental detokenization for streaming generated text."""

from __future__ import annotations

import codecs

from webgpu_llm.tokenizer.tokenizer import Tokenizer


class StreamDecoder:
    """Feed generated token ids one at a time; get back the text each one adds.

    The text is what the tokens add to decode(prompt_ids + generated): bytes of a character
    split over several tokens (byte-level BPE, <0xXX> byte tokens) are held back until the
    character is complete, and the leading space of a SentencePiece vocabulary is dropped only
    at the very start of the text. Concatenating push() results and flush() gives
    decode(prompt_ids + generated) minus decode(prompt_ids).
    """

    def __init__(
        self, tok: Tokenizer, prompt_ids: list[int] | None = None, skip_special: bool = True
    ) -> None:
        self._tok = tok
        self._skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._at_start = True
        if prompt_ids:
            self._carry(prompt_ids)

    def _carry(self, prompt_ids: list[int]) -> None:
        """Take over the state the prompt leaves (its text is not ours to emit): a character
        it left unfinished, and the start-of-text rule. A character takes at most 4 bytes
        and UTF-8 finds its own boundaries, so the prompt's last 4 bytes (and its first
        piece with text, which the rule strips) say as much as all of it: a server builds a
        decoder per request on its event loop, where a long prompt's every piece cost time."""
        piece = self._tok.piece
        first = next((i for i, t in enumerate(prompt_ids) if piece(t, self._skip_special)), None)
        if first is None:  # no text yet (e.g. BOS alone): the rule still holds for ours
            return
        tail: list[bytes] = []
        held, i = 0, len(prompt_ids)
        while i > first and held < 4:
            i -= 1
            tail.append(piece(prompt_ids[i], self._skip_special))
            held += len(tail[-1])
        if i == first:
            tail[-1] = self._tok.strip_leading_space(tail[-1])
        self._utf8.decode(b"".join(reversed(tail)))
        self._at_start = False

    def push(self, id: int) -> str:
        """The new text token `id` completes ('' while a character is still unfinished)."""
        return self._utf8.decode(self._bytes_of(id))

    def flush(self) -> str:
        """The rest at the end of the stream: an unfinished character becomes U+FFFD."""
        return self._utf8.decode(b"", final=True)

    def _bytes_of(self, tid: int) -> bytes:
        piece = self._tok.piece(tid, self._skip_special)
        if self._at_start and piece:
            piece = self._tok.strip_leading_space(piece)
            self._at_start = False
        return piece
