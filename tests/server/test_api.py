"""The OpenAI-compatible API of `webgpu-llm serve`, through the official `openai` client against
a real server process (the tiny random model): answers, streaming, stops, usage, seeds, the
API key, bad input (each a 4xx with a clear message, the server serving on), 64 concurrent
streams each equal to the same request alone, and a client that leaves mid-stream."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest
from server_helpers import API_KEY, TINY_CTX, ServerProcess, sse_events

AUTH = {"Authorization": f"Bearer {API_KEY}"}
HELLO = [{"role": "user", "content": "Hello there, how are you?"}]


def greedy(**kw: Any) -> dict[str, Any]:
    return {"model": "tiny", "temperature": 0.0, **kw}


def test_models_and_health(server: ServerProcess, client: Any) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny"]
    assert models[0].model_extra["context_length"] == TINY_CTX
    assert client.models.retrieve("tiny").id == "tiny"
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}  # no key needed


def test_chat_answer_and_usage(client: Any) -> None:
    r = client.chat.completions.create(messages=HELLO, max_tokens=12, **greedy())
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 5
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.object == "chat.completion" and r.model == "tiny" and r.id.startswith("chatcmpl-")


def test_chat_stream_equals_the_answer_and_counts_usage(client: Any) -> None:
    whole = client.chat.completions.create(messages=HELLO, max_tokens=16, **greedy())
    chunks = list(client.chat.completions.create(messages=HELLO, max_tokens=16, stream=True,
                                                 stream_options={"include_usage": True}, **greedy()))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()
    assert all(c.usage is None for c in chunks[:-1])
    # without include_usage: no usage chunk
    plain = list(client.chat.completions.create(messages=HELLO, max_tokens=4, stream=True, **greedy()))
    assert all(c.usage is None and c.choices for c in plain)


def test_completions_text_and_token_ids(client: Any) -> None:
    r = client.completions.create(prompt="The quick brown fox", max_tokens=10, **greedy())
    assert r.object == "text_completion" and r.usage.completion_tokens <= 10
    s = list(client.completions.create(prompt="The quick brown fox", max_tokens=10, stream=True, **greedy()))
    assert "".join(c.choices[0].text for c in s) == r.choices[0].text
    assert s[-1].choices[0].finish_reason == r.choices[0].finish_reason
    ids = client.completions.create(prompt=[100, 200, 300, 400], max_tokens=5, **greedy())
    assert ids.usage.prompt_tokens == 4 and ids.usage.completion_tokens <= 5


def test_ignore_eos_generates_exactly_max_tokens(client: Any) -> None:
    r = client.completions.create(prompt=[5, 6, 7], max_tokens=40, extra_body={"ignore_eos": True}, **greedy())
    assert r.usage.completion_tokens == 40 and r.choices[0].finish_reason == "length"


def test_stop_strings(client: Any) -> None:
    full = client.completions.create(prompt="Numbers like", max_tokens=24, **greedy()).choices[0].text
    assert len(full) > 12, full
    stop = full[6:9]
    expect = full[: full.find(stop)]
    r = client.completions.create(prompt="Numbers like", max_tokens=24, stop=stop, **greedy())
    assert r.choices[0].text == expect and r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens < 24
    streamed = list(client.completions.create(prompt="Numbers like", max_tokens=24, stop=["zzzz", stop],
                                              stream=True, **greedy()))
    assert "".join(c.choices[0].text for c in streamed) == expect
    assert streamed[-1].choices[0].finish_reason == "stop"
    chat_full = client.chat.completions.create(messages=HELLO, max_tokens=24, **greedy()).choices[0].message.content
    assert len(chat_full) > 8, chat_full
    cut = client.chat.completions.create(messages=HELLO, max_tokens=24, stop=[chat_full[4:7]], **greedy())
    assert cut.choices[0].message.content == chat_full[: chat_full.find(chat_full[4:7])]


def test_seeds_are_reproducible(client: Any) -> None:
    def sample(seed: int) -> str:
        r = client.chat.completions.create(messages=HELLO, max_tokens=16, temperature=1.0, seed=seed,
                                           extra_body={"ignore_eos": True, "top_k": 0, "min_p": 0.0}, model="tiny")
        return r.choices[0].message.content

    a = sample(1234)
    assert sample(1234) == a
    assert len({a, sample(1), sample(2)}) > 1  # other seeds, other answers


def test_sampling_extensions_are_taken(client: Any) -> None:
    r = client.chat.completions.create(messages=HELLO, max_tokens=8, temperature=0.7, top_p=0.9, seed=3,
                                       extra_body={"top_k": 20, "min_p": 0.1, "repeat_penalty": 1.3,
                                                   "repeat_last_n": 32}, model="tiny")
    assert r.usage.completion_tokens <= 8


def test_frequency_and_presence_penalties_change_a_greedy_answer(client: Any) -> None:
    """Greedy, so the penalties alone move the answer (a strong presence penalty keeps the
    tokens already seen out of the last window)."""
    def answer(**kw: float) -> str:
        r = client.chat.completions.create(messages=HELLO, max_tokens=24, temperature=0, model="tiny",
                                           extra_body={"ignore_eos": True}, **kw)
        return r.choices[0].message.content

    plain = answer()
    assert answer(frequency_penalty=0.0, presence_penalty=0.0) == plain
    assert answer(presence_penalty=2.0) != plain


def test_api_key(server: ServerProcess) -> None:
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        c.models.list()
    assert e.value.status_code == 401 and "API key" in e.value.message
    for headers in ({}, {"Authorization": API_KEY}, {"Authorization": f"Basic {API_KEY}"}):
        assert httpx.get(server.url + "/v1/models", headers=headers).status_code == 401
    r = httpx.post(server.url + "/v1/chat/completions", json={"messages": HELLO})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/metrics", headers=AUTH).status_code == 200


def _ok(server: ServerProcess) -> None:
    """The server still serves: a real request goes through."""
    r = httpx.post(server.url + "/v1/completions", headers=AUTH, timeout=60,
                   json={"prompt": "ok", "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200, r.text


LONG = "word " * (TINY_CTX + 200)

BAD: list[tuple[str, Any, int, str, str | None]] = [
    # (endpoint, body (bytes: sent raw), status, a part of the message, param)
    ("chat", b'{"messages": [{"role": "user", "content": "hi"}', 400, "not valid JSON", None),
    ("chat", b"[1, 2]", 400, "must be a JSON object", None),
    ("chat", b"", 400, "not valid JSON", None),
    ("chat", {"messages": HELLO, "temperature": "hot"}, 400, "valid number", "temperature"),
    ("chat", {"messages": HELLO, "max_tokens": "12"}, 400, "valid integer", "max_tokens"),
    ("chat", {"messages": HELLO, "stream": "yes"}, 400, "valid boolean", "stream"),
    ("chat", {"messages": "hello"}, 400, "valid array", "messages"),
    ("chat", {"messages": []}, 400, "at least 1", "messages"),
    ("chat", {}, 400, "required", "messages"),
    ("chat", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "must be one of", "messages.0.role"),
    ("chat", {"messages": [{"role": "user", "content": 5}]}, 400, "string or a list of content parts",
     "messages.0.content"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     400, "not supported", "messages.0.content"),
    ("chat", {"messages": HELLO, "model": "gpt-4o"}, 404, "not served here", "model"),
    ("chat", {"messages": HELLO, "temperature": -0.5}, 400, "greater than or equal to 0", "temperature"),
    ("chat", {"messages": HELLO, "top_p": 0}, 400, "greater than 0", "top_p"),
    ("chat", {"messages": HELLO, "n": 2}, 400, "n=1", "n"),
    ("chat", {"messages": HELLO, "frequency_penalty": 2.5}, 400, "frequency_penalty", "frequency_penalty"),
    ("chat", {"messages": HELLO, "presence_penalty": -3}, 400, "presence_penalty", "presence_penalty"),
    ("chat", {"messages": HELLO, "top_logprobs": 2}, 400, "needs logprobs", "top_logprobs"),
    ("chat", {"messages": HELLO, "logprobs": True, "top_logprobs": 21}, 400, "top_logprobs", "top_logprobs"),
    ("chat", {"messages": HELLO, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400,
     "not supported", "tools"),
    ("chat", {"messages": HELLO, "stop": ""}, 400, "empty stop", "stop"),
    ("chat", {"messages": HELLO, "stop": [1, 2]}, 400, "string or a list of strings", "stop"),
    ("chat", {"messages": HELLO, "max_tokens": 0}, 400, "greater than or equal to 1", "max_tokens"),
    ("chat", {"messages": HELLO, "max_tokens": TINY_CTX}, 400, "new tokens fit", "max_tokens"),
    ("chat", {"messages": HELLO, "max_completion_tokens": TINY_CTX + 5}, 400, "new tokens fit",
     "max_completion_tokens"),
    ("chat", {"messages": [{"role": "user", "content": LONG}]}, 400, "context holds", None),
    ("completions", {"prompt": LONG, "max_tokens": 1}, 400, "context holds", None),
    ("completions", {"prompt": ["a", "b"]}, 400, "one prompt per request", "prompt"),
    ("completions", {"prompt": [1, "a"]}, 400, "token ids", "prompt"),
    ("completions", {"prompt": [5, 99999]}, 400, "outside the vocabulary", "prompt"),
    ("completions", {"prompt": [-1]}, 400, "outside the vocabulary", "prompt"),
    ("completions", {"prompt": "hi", "logprobs": 21}, 400, "logprobs", "logprobs"),
    ("completions", {"prompt": "hi", "echo": True}, 400, "echo", "echo"),
    ("completions", {"prompt": "hi", "top_k": 1.5}, 400, "valid integer", "top_k"),
    ("completions", {"prompt": "hi", "seed": True}, 400, "valid integer", "seed"),
]


@pytest.mark.parametrize(("endpoint", "body", "status", "says", "param"), BAD,
                         ids=[f"{i}-{b[0]}-{b[3][:20]}" for i, b in enumerate(BAD)])
def test_bad_input_is_a_clear_4xx(server: ServerProcess, endpoint: str, body: Any, status: int, says: str,
                                  param: str | None) -> None:
    url = server.url + ("/v1/chat/completions" if endpoint == "chat" else "/v1/completions")
    if isinstance(body, bytes):
        r = httpx.post(url, content=body, headers={**AUTH, "Content-Type": "application/json"}, timeout=60)
    else:
        r = httpx.post(url, json=body, headers=AUTH, timeout=60)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert says in err["message"], err
    assert err["param"] == param and err["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    _ok(server)


def test_bad_input_through_the_client(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(messages=HELLO, temperature=-1, model="tiny")
    assert "temperature" in e.value.message
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(messages=HELLO, model="no-such-model")
    assert "no-such-model" in nf.value.message


def test_other_http_errors(server: ServerProcess) -> None:
    r = httpx.get(server.url + "/v1/nothing-here", headers=AUTH)
    assert r.status_code == 404 and "no such endpoint" in r.json()["error"]["message"]
    r = httpx.get(server.url + "/v1/chat/completions", headers=AUTH)
    assert r.status_code == 405 and "not allowed" in r.json()["error"]["message"]
    r = httpx.post(server.url + "/v1/completions", headers=AUTH, content=b"x" * (9 << 20))
    assert r.status_code == 413 and "larger than" in r.json()["error"]["message"]
    chunked = (b"x" * (1 << 20) for _ in range(9))  # no Content-Length: counted as it comes
    r = httpx.post(server.url + "/v1/completions", headers=AUTH, content=chunked)
    assert r.status_code == 413 and "larger than" in r.json()["error"]["message"]
    r = httpx.get(server.url + "/v1/models/other", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    _ok(server)


def test_metrics(server: ServerProcess, client: Any) -> None:
    before = server.metrics()
    client.completions.create(prompt=[1, 2, 3], max_tokens=6, extra_body={"ignore_eos": True}, **greedy())
    assert httpx.post(server.url + "/v1/completions", headers=AUTH, json={"prompt": "x", "n": 3}).status_code == 400
    after = server.metrics()
    assert after["webgpu_llm_requests_total"] >= before["webgpu_llm_requests_total"] + 1
    assert after["webgpu_llm_generated_tokens_total"] >= before["webgpu_llm_generated_tokens_total"] + 6
    assert after["webgpu_llm_prompt_tokens_total"] >= before["webgpu_llm_prompt_tokens_total"] + 3
    assert after['webgpu_llm_responses_total{finish_reason="length"}'] >= 1
    assert after["webgpu_llm_parallel_sequences"] == 4 and after["webgpu_llm_context_tokens"] == TINY_CTX
    assert after["webgpu_llm_kv_cache_tokens"] == 4 * TINY_CTX and after["webgpu_llm_kv_cache_used_tokens"] == 0
    for name in ("webgpu_llm_queue_depth", "webgpu_llm_active_sequences", "webgpu_llm_generated_tokens_per_second",
                 "webgpu_llm_time_to_first_token_seconds_count", "webgpu_llm_inter_token_latency_seconds_count"):
        assert name in after
    refused = 'webgpu_llm_refused_requests_total{status="400"}'
    assert after[refused] == before.get(refused, 0) + 1
    # the batched engine's steps: a 3-token prompt and 6 tokens take at least 6 steps of 1+ rows
    steps = after["webgpu_llm_engine_steps_total"] - before["webgpu_llm_engine_steps_total"]
    rows = after["webgpu_llm_engine_step_rows_total"] - before["webgpu_llm_engine_step_rows_total"]
    assert steps >= 6 and rows >= 3 + 5 and after["webgpu_llm_engine_wait_seconds_total"] >= 0


def test_64_concurrent_streams_each_equal_to_the_request_alone(server: ServerProcess, client: Any) -> None:
    n, max_tokens = 64, 8
    prompts = [[{"role": "user", "content": f"Question {i}: what is {i} plus {i * 7 % 13}?"}] for i in range(n)]
    alone = []
    for p in prompts:
        r = client.chat.completions.create(messages=p, max_tokens=max_tokens, **greedy())
        alone.append((r.choices[0].message.content, r.choices[0].finish_reason, r.usage.completion_tokens))

    async def one(c: openai.AsyncOpenAI, p: Any) -> tuple[str, str | None, int]:
        text, finish, usage = [], None, -1
        stream = await c.chat.completions.create(messages=p, max_tokens=max_tokens, stream=True,
                                                 stream_options={"include_usage": True}, **greedy())
        async for chunk in stream:
            if chunk.usage:
                usage = chunk.usage.completion_tokens
            if chunk.choices:
                text.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
        return "".join(text), finish, usage

    async def together() -> list[tuple[str, str | None, int]]:
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0,
                                      timeout=300) as c:
            return await asyncio.gather(*(one(c, p) for p in prompts))

    both = asyncio.run(together())
    assert both == alone
    assert len({a[0] for a in alone}) > n // 4  # the prompts really differ


def test_a_client_leaving_mid_stream_cancels_its_request(server: ServerProcess) -> None:
    before = server.metrics()
    body = {"prompt": [10, 11, 12], "max_tokens": 3000, "stream": True, "ignore_eos": True, "temperature": 0}
    with httpx.stream("POST", server.url + "/v1/completions", json=body, headers=AUTH, timeout=60) as r:
        events = sse_events(r)
        got = [next(events) for _ in range(3)]
        assert all(isinstance(e, dict) and e["choices"][0]["finish_reason"] is None for e in got)
    # the connection is closed: the request ends as "disconnected" and frees its sequence
    for _ in range(600):
        time.sleep(0.05)
        m = server.metrics()
        if m.get('webgpu_llm_responses_total{finish_reason="disconnected"}', 0) > before.get(
                'webgpu_llm_responses_total{finish_reason="disconnected"}', 0) and m["webgpu_llm_active_sequences"] == 0:
            break
    else:
        raise AssertionError(f"the request was not cancelled: {m}")
    generated = m["webgpu_llm_generated_tokens_total"] - before["webgpu_llm_generated_tokens_total"]
    assert generated < 3000, generated  # it stopped well before its budget
    _ok(server)


def test_logprobs_in_chat_and_completions(client: Any) -> None:
    """Greedy answers with logprobs: an entry per token, the token's own logprob the best of
    its alternatives, the same entries streamed and whole; the completions API's layout."""
    r = client.chat.completions.create(messages=HELLO, max_tokens=6, temperature=0, model="tiny",
                                       logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 6
    assert "".join(e.token for e in content) == r.choices[0].message.content
    for e in content:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        assert abs(e.top_logprobs[0].logprob - e.logprob) < 1e-6
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token
    streamed = [e for chunk in client.chat.completions.create(
        messages=HELLO, max_tokens=6, temperature=0, model="tiny", logprobs=True, top_logprobs=3, stream=True,
        extra_body={"ignore_eos": True}) if chunk.choices and chunk.choices[0].logprobs
        for e in chunk.choices[0].logprobs.content]
    assert [(e.token, round(e.logprob, 5)) for e in streamed] == [(e.token, round(e.logprob, 5)) for e in content]
    plain = client.chat.completions.create(messages=HELLO, max_tokens=6, temperature=0, model="tiny")
    assert plain.choices[0].logprobs is None
    c = client.completions.create(prompt="The sky is", max_tokens=4, temperature=0, logprobs=2, model="tiny",
                                  extra_body={"ignore_eos": True})
    lp = c.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert "".join(lp.tokens) == c.choices[0].text and lp.text_offset[0] == 0
    assert all(len(alts) == 2 for alts in lp.top_logprobs)
