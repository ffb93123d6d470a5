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
            # Run the prompt through the same state so that a character the prompt left
            # unfinished, and the start-of-text rule, carry over; its text is not ours to emit.
            self._utf8.decode(b"".join(self._bytes_of(tid) for tid in prompt_ids))

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
