"""`webgpu-llm chat`: an answer stopped early (Ctrl-C, or the caller stops reading) keeps the
conversation and a KV cache that agrees with it; Ctrl-C at the prompt leaves; /stats and
--verbose give a speed line."""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from webgpu_llm.api import LLM, ChatSession
from webgpu_llm.cli import chat
from webgpu_llm.cli.main import build_parser, main
from webgpu_llm.engine import SamplingParams
from webgpu_llm.tokenizer import StreamDecoder

pytest.importorskip("transformers")
from reference_models import make_tiny_llama

GREEDY: dict[str, Any] = {"temperature": 0.0}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), seed=5)


@pytest.fixture(scope="module")
def llm(tiny: Path, wgpu_gpu: Any) -> LLM:
    return LLM.load(tiny, gpu=wgpu_gpu, ctx=256, progress=False)


def fresh_answer(llm: LLM, messages: list[dict[str, str]], text: str, n: int) -> str:
    """The greedy answer of a session that holds `messages` but nothing in its cache."""
    s = ChatSession(llm, [dict(m) for m in messages])
    return "".join(s.send(text, max_tokens=n, **GREEDY))


def test_an_answer_stopped_early_keeps_the_conversation_and_a_true_cache(llm: LLM) -> None:
    s = llm.chat_session("Be brief.")
    pieces = s.send("hello there", max_tokens=40, **GREEDY)
    said = [next(pieces) for _ in range(5)]
    pieces.close()  # what the CLI does on Ctrl-C
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant"]
    assert s.messages[-1]["content"] == "".join(said)
    # the cache claims the prompt and the tokens generated before the last one, no more
    prompt = llm.prompt_ids(s.messages[:2])
    greedy = list(llm.generate_ids(prompt, 40, SamplingParams()))
    dec, shown, used = StreamDecoder(llm.tokenizer, prompt), 0, 0
    while shown < 5:  # how many tokens the 5 pieces took
        shown += bool(dec.push(greedy[used]))
        used += 1
    assert s.cached == prompt + greedy[: used - 1]
    # the next turn reuses that cache and answers as a session that prefills everything anew
    history = [dict(m) for m in s.messages]
    again = "".join(s.send("and then?", max_tokens=8, **GREEDY))
    assert again == fresh_answer(llm, history, "and then?", 8)
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user", "assistant"]


def test_a_turn_stopped_before_its_first_token_is_dropped(llm: LLM, monkeypatch: pytest.MonkeyPatch) -> None:
    s = llm.chat_session()
    "".join(s.send("first", max_tokens=4, **GREEDY))
    before, cached = [dict(m) for m in s.messages], list(s.cached)

    def interrupted(*args: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt
        yield  # a generator, as the real one

    monkeypatch.setattr(llm, "generate_ids", interrupted)
    with pytest.raises(KeyboardInterrupt):
        "".join(s.send("second", max_tokens=4, **GREEDY))
    monkeypatch.undo()
    assert s.messages == before
    assert s.cached == cached[: len(s.cached)] and len(s.cached) <= len(cached)
    assert "".join(s.send("third", max_tokens=6, **GREEDY)) == fresh_answer(llm, before, "third", 6)


class CtrlCAfter(io.StringIO):
    """stdout that sends this process a real SIGINT when the n-th piece is written."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n, self.writes = n, 0

    def write(self, s: str) -> int:
        self.writes += 1
        if self.writes == self.n:
            os.kill(os.getpid(), signal.SIGINT)
        return super().write(s)


def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(llm: LLM, monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["chat", "--max-tokens", "40", "--temperature", "0"])
    s = llm.chat_session()
    out = CtrlCAfter(3)
    monkeypatch.setattr(sys, "stdout", out)
    handler = signal.getsignal(signal.SIGINT)
    assert chat.answer(s, "hello there", args) is True
    assert signal.getsignal(signal.SIGINT) is handler  # Ctrl-C means KeyboardInterrupt again at the prompt
    shown = out.getvalue()
    assert shown.endswith("\n") and 0 < len(shown.rstrip("\n"))
    assert s.messages[-1] == {"role": "assistant", "content": shown[:-1]}
    assert len(s.cached) < len(llm.prompt_ids(s.messages[:1])) + 10  # stopped within a few tokens, not 40
    history = [dict(m) for m in s.messages]
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    args.max_tokens = 8
    assert chat.answer(s, "go on", args) is False
    assert sys.stdout.getvalue()[:-1] == fresh_answer(llm, history, "go on", 8)


def test_ctrl_c_in_the_prompt_stops_at_once(llm: LLM, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SIGINT while the engine processes the prompt (before any piece) interrupts it
    there, not at the first piece: nothing was shown, the turn is dropped, and the next answer
    is what a fresh session gives."""
    args = build_parser().parse_args(["chat", "--max-tokens", "40", "--temperature", "0"])
    s = llm.chat_session()
    history = [dict(m) for m in s.messages]
    prefill = llm.session.prefill
    pieces_reached: list[int] = []

    def interrupted(*a: Any, **kw: Any) -> None:
        prefill(*a, **kw)
        os.kill(os.getpid(), signal.SIGINT)
        pieces_reached.append(1)  # never runs: the interrupt lands before the next line
        raise AssertionError("the SIGINT did not interrupt the prompt")

    monkeypatch.setattr(llm.session, "prefill", interrupted)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert chat.answer(s, "hello there", args) is True
    assert out.getvalue() == "\n" and not pieces_reached
    assert s.messages == history
    monkeypatch.setattr(llm.session, "prefill", prefill)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    args.max_tokens = 8
    assert chat.answer(s, "go on", args) is False
    assert sys.stdout.getvalue()[:-1] == fresh_answer(llm, history, "go on", 8)


def test_ctrl_c_at_the_prompt_exits_0_and_stats(tiny: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    lines = iter(["/stats", "hi", "/stats"])

    def fake_input(prompt: str = "") -> str:
        try:
            return next(lines)
        except StopIteration:
            raise KeyboardInterrupt from None

    monkeypatch.setattr("builtins.input", fake_input)
    code = main(["chat", "-m", str(tiny), "--max-tokens", "3", "-t", "0", "--verbose", "-q"])
    out, err = capsys.readouterr()
    assert code == 0
    assert len(out.splitlines()) == 1  # one answer
    stats = err.splitlines()
    assert stats[0] == "no answer yet"
    assert len(stats) == 3 and stats[1] == stats[2] and "generated at" in stats[1]  # --verbose, then /stats


def test_chat_has_no_json_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["chat", "--json"])
    assert e.value.code == 2 and "--json" in capsys.readouterr().err
