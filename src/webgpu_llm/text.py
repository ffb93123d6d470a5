"""From a request's token ids to the text a client sees: detokenized, with stop strings.

`StopStrings` is push-based (text in as it comes, the part that is safe to show out), which
an asyncio server needs (it cannot pull from a generator that would block the event loop);
the Python API pulls through it too (`api._stop_strings`). The rule: hold back the tail that
could start a stop string, cut at the earliest stop found. `TextStream` feeds it from a
tokenizer's `StreamDecoder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Where `text` is cut by the first of `stops` to be complete as it is read (-1: none): the
    one that ends first, and of those ending there the one that starts first. So a piece that
    completes two overlapping stops cuts where streaming it a character at a time would."""
    found = [(i + len(s), i) for s in stops if (i := text.find(s)) >= 0]
    return min(found)[1] if found else -1


class StopStrings:
    """Pass text through until one of `stops` appears; hold back a tail that could start one."""

    def __init__(self, stops: Sequence[str] = ()) -> None:
        if any(not s for s in stops):
            raise ValueError("an empty stop string would stop at once")
        self.stops = list(stops)
        self._hold = max((len(s) for s in self.stops), default=1) - 1
        self._buf = ""
        self.stopped = False  # a stop string was found: nothing more comes out

    def push(self, text: str) -> str:
        """The text that is now sure to be shown ('' while it could still start a stop)."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self._buf += text
        cut = first_stop(self._buf, self.stops)
        if cut >= 0:
            out, self._buf, self.stopped = self._buf[:cut], "", True
            return out
        if len(self._buf) > self._hold:
            out = self._buf[: len(self._buf) - self._hold]
            self._buf = self._buf[len(self._buf) - self._hold:]
            return out
        return ""

    def flush(self) -> str:
        """At the end of the text: what was held back (it never completed a stop)."""
        out, self._buf = ("" if self.stopped else self._buf), ""
        return out


class TextStream:
    """A request's new tokens → text pieces: `push(id)` gives the text now safe to show,
    `finish()` the rest at the end; `stopped` once a stop string was met (the caller cancels
    the request: tokens after it are not shown or counted); `tokens` counts the tokens
    taken, up to and including the one that completed a stop string."""

    def __init__(self, tokenizer: Any, prompt_ids: list[int], stops: Sequence[str] = ()) -> None:
        from .tokenizer import StreamDecoder

        self._dec = StreamDecoder(tokenizer, prompt_ids)
        self._stops = StopStrings(stops)
        self.tokens = 0

    @property
    def stopped(self) -> bool:
        return self._stops.stopped

    def push(self, token: int) -> str:
        if self._stops.stopped:
            return ""
        self.tokens += 1
        return self._stops.push(self._dec.push(token))

    def finish(self) -> str:
        if self._stops.stopped:
            return ""
        out = self._stops.push(self._dec.flush())
        return out + self._stops.flush()
