"""Stop strings pushed piece by piece (`text.StopStrings`, the server's) cut exactly where the
Python API's pulled `_stop_strings` (over the same class) does, and where the first stop to
complete starts, for any split of the text; `TextStream` over a real
tokenizer gives the text of the ids."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from webgpu_llm.api import _stop_strings
from webgpu_llm.text import StopStrings, TextStream
from webgpu_llm.tokenizer import load_tokenizer_from_dir

ALPHABET = "ab\n é"
pieces_st = st.lists(st.text(ALPHABET, max_size=4), max_size=12)
stops_st = st.lists(st.text(ALPHABET, min_size=1, max_size=3), max_size=3)


def pushed(pieces: list[str], stops: list[str], tail: str) -> tuple[str, bool]:
    s = StopStrings(stops)
    out = "".join(s.push(p) for p in pieces)
    out += s.push(tail) + s.flush()
    return out, s.stopped


@settings(max_examples=400, deadline=None)
@given(pieces_st, stops_st, st.text(ALPHABET, max_size=2))
def test_pushed_equals_pulled(pieces: list[str], stops: list[str], tail: str) -> None:
    pulled = "".join(_stop_strings((p for p in pieces), stops, lambda: tail))
    out, stopped = pushed(pieces, stops, tail)
    assert out == pulled
    whole = "".join(pieces) + tail
    # the stop that completes first as the text is read (of those, the one starting first)
    ends = [(i + len(s), i) for s in stops if (i := whole.find(s)) >= 0]
    cut = min(ends)[1] if ends else -1
    assert out == (whole[:cut] if cut >= 0 else whole)
    assert stopped == (cut >= 0)


def test_overlapping_stops_cut_where_the_first_completes() -> None:
    """A later stop string that completes first wins, however the text is split: "b" ends
    before "\nb\n" does, though the longer one starts earlier."""
    for pieces in (["\nb", "\n"], ["\nb\n"], ["\n", "b", "\n"]):
        assert pushed(pieces, ["b", "\nb\n"], "") == ("\n", True), pieces
    assert pushed(["xab"], ["ab", "b"], "") == ("x", True)  # ending together: the earlier start


def test_nothing_after_a_stop() -> None:
    s = StopStrings(["END"])
    assert [s.push("abcE"), s.push("N"), s.push("D and more")] == ["ab", "c", ""]
    assert s.stopped and s.push("x") == "" and s.flush() == ""
    assert StopStrings().push("any") == "any"


def test_text_stream_over_a_tokenizer(tiny_model: Path) -> None:
    tok = load_tokenizer_from_dir(tiny_model)
    ids = tok.encode("Hello wörld, the END is near")
    plain = TextStream(tok, [], [])
    assert "".join(plain.push(t) for t in ids) + plain.finish() == tok.decode(ids)
    assert plain.tokens == len(ids) and not plain.stopped
    cut = TextStream(tok, [], ["END"])
    out = ""
    for t in ids:
        out += cut.push(t)
        if cut.stopped:
            break
    assert out + cut.finish() == "Hello wörld, the "
    assert cut.stopped and cut.tokens < len(ids)
    # the tokens counted: up to the one that completed the stop string
    assert "END" in tok.decode(ids[: cut.tokens]) and "END" not in tok.decode(ids[: cut.tokens - 1])
