"""The server's life under load and at its end: a full queue answers 429 with Retry-After, a
client that leaves frees its sequence slot for the next request, SIGTERM lets a running stream
finish before the process exits (code 0); and `serve`'s options are checked before the model
loads."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from server_helpers import TINY_CTX, ServerProcess, sse_events

from webgpu_llm.api import LLM
from webgpu_llm.cli.main import main

LONG = TINY_CTX - 100  # tokens of a request that keeps the engine busy for seconds


def long_stream(server: ServerProcess, prompt: list[int], max_tokens: int = LONG) -> Any:
    body = {"prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True, "temperature": 0,
            "stream_options": {"include_usage": True}}
    return httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=120)


def test_a_shared_kv_cache_admits_what_fits(tiny_model: Path) -> None:
    """--kv-tokens 48 for 2 sequences: a request whose prompt and max_tokens need more gets a
    400 that says so, one that fits is answered, and /metrics counts the shared positions."""
    s = ServerProcess("--model", str(tiny_model), "--ctx", str(TINY_CTX), "--parallel", "2", "--kv-tokens", "48")
    try:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        with pytest.raises(openai.BadRequestError, match="KV cache"):
            client.completions.create(model=model, prompt=[5] * 30, max_tokens=40)
        r = client.completions.create(model=model, prompt=[5] * 30, max_tokens=10)
        assert 1 <= r.usage.completion_tokens <= 10
        m = s.metrics(key=None)
        assert m["webgpu_llm_kv_cache_tokens"] == 48 and m["webgpu_llm_kv_cache_used_tokens"] == 0
    finally:
        s.stop()


def test_queue_full_gives_429_and_a_leaving_client_frees_its_slot(tiny_model: Path) -> None:
    s = ServerProcess("--model", str(tiny_model), "--ctx", str(TINY_CTX), "--parallel", "1", "--max-queue", "1")
    try:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        with long_stream(s, [10, 11, 12]) as a:
            a_events = sse_events(a)
            next(a_events)  # A has its slot and is generating
            chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": LONG, "stream": True,
                    "temperature": 0}
            with httpx.stream("POST", s.url + "/v1/chat/completions", json=chat, timeout=120) as b:
                b_events = sse_events(b)
                first = next(b_events)  # B is accepted and waits: its opening chunk has no text
                assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
                m = s.metrics(key=None)
                assert m["webgpu_llm_queue_depth"] == 1 and m["webgpu_llm_active_sequences"] == 1
                with pytest.raises(openai.RateLimitError) as e:  # C: no room
                    client.completions.create(model=model, prompt="hello", max_tokens=2)
                assert e.value.status_code == 429 and int(e.value.response.headers["retry-after"]) >= 1
                assert "busy" in e.value.message
                a.close()  # A leaves: B gets the slot and streams
                second = next(b_events)
                assert second["choices"][0]["delta"].get("content") is not None, second
        r = client.completions.create(model=model, prompt="hello", max_tokens=2)
        assert r.usage.completion_tokens <= 2
        m = s.metrics(key=None)
        assert m['webgpu_llm_refused_requests_total{status="429"}'] == 1
        assert m['webgpu_llm_responses_total{finish_reason="disconnected"}'] == 2
    finally:
        s.stop()


def test_sigterm_drains_a_running_stream_then_exits(tiny_model: Path) -> None:
    s = ServerProcess("--model", str(tiny_model), "--ctx", str(TINY_CTX))
    try:
        n = 800
        with long_stream(s, [20, 21, 22], max_tokens=n) as r:
            events = sse_events(r)
            next(events)
            s.proc.send_signal(signal.SIGTERM)
            rest = list(events)
        assert rest[-1] == "[DONE]"
        usage = rest[-2]["usage"]
        assert usage["completion_tokens"] == n, usage
        assert rest[-3]["choices"][0]["finish_reason"] == "length"
        assert s.proc.wait(60) == 0, s.log()
        assert "Waiting for connections to close" in s.log()
        with pytest.raises(httpx.TransportError):
            httpx.get(s.url + "/health", timeout=5)
    finally:
        s.stop(signal.SIGKILL)


@pytest.fixture
def no_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kw: Any) -> Any:
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(LLM, "load", classmethod(refuse))


@pytest.mark.usefixtures("no_load")
@pytest.mark.parametrize(("args", "says"), [
    (["--port", "70000"], "--port"),
    (["--parallel", "0"], "--parallel"),
    (["--max-queue", "-1"], "--max-queue"),
    (["--kv-tokens", "8"], "--kv-tokens"),
    (["--kv-tokens", "64", "--parallel", "1"], "--parallel 2"),
    (["--ctx", "1"], "--ctx"),
    (["--api-key", " "], "API key"),
    (["--api-key", "a", "--api-key-file", "f"], "not both"),
    (["--api-key-file", "/nonexistent/key"], "cannot be read"),
    (["--drain-timeout", "-1"], "--drain-timeout"),
    (["--host", "no-such-host.invalid"], "--host"),
])
def test_options_are_checked_before_the_model_loads(capsys: pytest.CaptureFixture[str], tiny_model: Path,
                                                    args: list[str], says: str) -> None:
    code = main(["serve", "--model", str(tiny_model), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err


@pytest.mark.usefixtures("no_load")
def test_a_port_in_use_fails_before_the_model_loads(capsys: pytest.CaptureFixture[str], tiny_model: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--model", str(tiny_model), "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "another server" in err, err


def _engine_pid(server: ServerProcess) -> int:
    """The engine's process: the server's child started by multiprocessing's spawn."""
    pid = server.proc.pid
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
            return int(child)
    raise AssertionError(f"no engine process under the server {pid}")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the engine process through /proc")
def test_an_engine_process_that_dies_fails_its_requests_and_health(tiny_model: Path) -> None:
    """The engine's process killed under a running stream: the stream ends with an error
    event, new requests get 503 saying why, /health turns 503; the server itself answers."""
    s = ServerProcess("--model", str(tiny_model), "--ctx", str(TINY_CTX), "--parallel", "2")
    try:
        with long_stream(s, [30, 31, 32]) as r:
            events = sse_events(r)
            next(events)
            os.kill(_engine_pid(s), signal.SIGKILL)
            rest = list(events)
        errors = [e["error"]["message"] for e in rest if isinstance(e, dict) and "error" in e]
        assert errors and "engine process ended" in errors[0], rest[-3:]
        h = httpx.get(s.url + "/health", timeout=30)
        assert h.status_code == 503 and h.json()["status"] == "engine failed", h.text
        r2 = httpx.post(s.url + "/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 2}, timeout=30)
        assert r2.status_code == 503 and r2.json()["error"]["code"] == "engine_failed", r2.text
        assert "engine process ended" in r2.json()["error"]["message"]
    finally:
        s.stop(signal.SIGKILL)


def test_the_engine_in_a_process_answers_as_on_a_thread(tiny_model: Path) -> None:
    """--engine process (the default; batched and serial) and --engine thread: the same greedy
    answers and usage to a completion and a chat, and /metrics' counters settle to the same."""
    answers = []
    for engine, parallel in (("process", "2"), ("thread", "2"), ("process", "1")):
        s = ServerProcess("--model", str(tiny_model), "--ctx", "256", "--parallel", parallel, "--engine", engine)
        try:
            client = openai.OpenAI(base_url=s.url + "/v1", api_key="none", max_retries=0, timeout=120)
            model = client.models.list().data[0].id
            c = client.completions.create(model=model, prompt=[7, 8, 9, 10], max_tokens=12, temperature=0)
            ch = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=8, temperature=0)
            answers.append((c.choices[0].text, c.usage.completion_tokens, ch.choices[0].message.content,
                            ch.usage.prompt_tokens))
            generated = c.usage.completion_tokens + ch.usage.completion_tokens
            deadline = time.monotonic() + 10
            while True:  # the engine's counters reach the server a moment after the answers
                m = s.metrics(key=None)
                settled = (m["webgpu_llm_active_sequences"], m["webgpu_llm_generated_tokens_total"],
                           m["webgpu_llm_requests_total"]) == (0, generated, 2)
                if settled or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert settled, (engine, parallel, m)
        finally:
            s.stop()
    assert answers[0] == answers[1] == answers[2], answers


def test_an_engine_that_cannot_load_fails_in_one_line(capsys: pytest.CaptureFixture[str], tiny_model: Path) -> None:
    """A failure in the engine process's load (no such adapter) is the server's: one line,
    exit code 2, no traceback."""
    code = main(["serve", "--model", str(tiny_model), "--port", "0", "--adapter", "no-such-gpu-adapter"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no-such-gpu-adapter" in err[0], err
