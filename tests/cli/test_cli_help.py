"""The command line's help is true to the code, and every option is checked before the model
loads (a mistake costs no load: `LLM.load` is made to fail here, so reaching it shows)."""

from __future__ import annotations

import argparse
import re
import types
from pathlib import Path
from typing import Any

import pytest

import webgpu_llm
from webgpu_llm.api import LLM
from webgpu_llm.cli.main import COMMANDS, build_parser, main
from webgpu_llm.errors import UserError


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def entries(text: str) -> dict[str, str]:
    """Option string -> its help, whitespace joined, from a --help page."""
    out: dict[str, str] = {}
    current: list[str] = []
    for line in text.splitlines():
        m = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if m:
            current = re.findall(r"(?<![\w-])(--?[\w-]+)", m.group(1))
            for opt in current:
                out[opt] = m.group(2) or ""
        elif current and line.startswith("      ") and line.strip():
            for opt in current:
                out[opt] = (out[opt] + " " + line.strip()).strip()
        else:
            current = []
    return out


def shown_defaults(help_: str) -> list[str]:
    return [m.rstrip(".") for m in re.findall(r"default: ([^\s,;)]+)", help_)]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_shows_the_defaults_used(capsys: pytest.CaptureFixture[str], command: str) -> None:
    """Every default the help shows is the parser's default, and every default that is a
    value (not None, not a flag's False, not an empty list) is shown."""
    parser = subparsers()[command]
    shown = entries(help_text(capsys, command))
    checked = 0
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
            continue
        text = shown[action.option_strings[0]]
        values = shown_defaults(text)
        d = action.default
        if d is None or d is False or d == [] or d == "":
            continue  # no value to show; any "default: ..." there describes what happens instead
        assert values, f"{command} {action.option_strings[0]}: the help does not show the default {d!r}: {text!r}"
        assert all(v == str(d) for v in values), f"{command} {action.option_strings[0]}: shows {values}, uses {d!r}"
        checked += 1
    assert checked >= {"generate": 8, "chat": 8, "perplexity": 2, "bench": 7}.get(command, 0)


def test_chat_help_shows_chats_own_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    chat = entries(help_text(capsys, "chat"))
    assert shown_defaults(chat["--max-tokens"]) == ["512"] and shown_defaults(chat["--temperature"]) == ["0.7"]
    gen = entries(help_text(capsys, "generate"))
    assert shown_defaults(gen["--max-tokens"]) == ["256"] and shown_defaults(gen["--temperature"]) == ["0.0"]
    assert "--json" not in chat and "--json" in gen
    assert "model's maximum" in gen["--ctx"]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_has_no_format_leftovers(capsys: pytest.CaptureFixture[str], command: str) -> None:
    text = help_text(capsys, *([command] if command else []))
    assert "%%" not in text and "%(" not in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"webgpu-llm {webgpu_llm.__version__}"


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kw: Any) -> Any:
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(LLM, "load", classmethod(refuse))


def one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.usefixtures("no_load")
@pytest.mark.parametrize(("argv", "says"), [
    (["generate", "--top-p", "2", "-t", "1", "hi"], "--top-p"),
    (["generate", "--temperature", "-1", "hi"], "--temperature"),
    (["generate", "--top-k", "-3", "hi"], "--top-k"),
    (["generate", "--min-p", "1", "hi"], "--min-p"),
    (["generate", "--repeat-penalty", "0", "hi"], "--repeat-penalty"),
    (["generate", "--max-tokens", "0", "hi"], "--max-tokens"),
    (["generate", "--ctx", "-5", "hi"], "--ctx"),
    (["generate", "--ctx", "1", "hi"], "--ctx"),
    (["generate", "--stop", "", "hi"], "--stop"),
    (["generate", ""], "empty"),
    (["chat", "--top-p", "0"], "--top-p"),
    (["chat", "--max-tokens", "-1"], "--max-tokens"),
    (["perplexity", "--ctx", "1", "--file", "-"], "--ctx"),
    (["generate", "--model", "no-such-org/no-such-model", "hi"], "no-such-org/no-such-model"),
])
def test_options_are_checked_before_the_model_loads(capsys: pytest.CaptureFixture[str], argv: list[str],
                                                    says: str) -> None:
    assert says in one_line_error(capsys, *argv)


@pytest.mark.usefixtures("no_load")
def test_perplexity_file_that_is_a_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert "is a directory" in one_line_error(capsys, "perplexity", "--file", str(tmp_path))
    assert "no such file" in one_line_error(capsys, "perplexity", "--file", str(tmp_path / "none.txt"))


@pytest.mark.parametrize(("n", "ctx", "max_tokens", "kept"), [
    (20, 16, 5, 11),  # room for all 5 new tokens: 11 + 5 = 16
    (20, 16, 1, 15),  # at most ctx - 1: the first new token needs a place
    (20, 16, 40, 1),  # more than the context: one prompt token is kept, the rest of the context generated
    (12, 16, 5, 11),  # fits the context but not with 5 new tokens: cut too
    (3, 16, 5, 3),  # fits with room: unchanged
])
def test_truncate_keeps_room_for_max_tokens(n: int, ctx: int, max_tokens: int, kept: int) -> None:
    ids = list(range(100, 100 + n))
    fake: Any = types.SimpleNamespace(ctx=ctx)
    got = LLM._fit(fake, ids, True, max_tokens)
    assert got == ids[-kept:]
    if n > ctx - 1:
        with pytest.raises(UserError, match="--truncate"):
            LLM._fit(fake, ids, False, max_tokens)
    else:
        assert LLM._fit(fake, ids, False, max_tokens) == ids
