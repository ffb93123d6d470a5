"""A streamed text chunk's event made by splicing its text into the chunk's JSON
(`app.text_events`) is byte for byte what sse-starlette makes of the whole chunk."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from sse_starlette.event import ServerSentEvent

from webgpu_llm.server.app import _MARK, _json, text_events

HEAD = {"id": "chatcmpl-1", "created": 7, "model": "tiny \"model\"", "system_fingerprint": "webgpu-llm-0"}


def chat_chunk(text: str | None, finish: str | None) -> dict[str, Any]:
    return {**HEAD, "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}]}


def completion_chunk(text: str | None, finish: str | None) -> dict[str, Any]:
    return {**HEAD, "choices": [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]}


@settings(max_examples=200, deadline=None)
@given(st.text() | st.sampled_from(['"', "\\", "\n\r", "\u2028\u2029\x85", "😀 é", _MARK, "\x00"]))
def test_a_spliced_event_is_the_whole_chunks_event(text: str) -> None:
    for chunk in (chat_chunk, completion_chunk):
        event = text_events(chunk)(text)
        assert event == ServerSentEvent(_json(chunk(text, None)), sep="\n").encode()
        assert json.loads(event.decode()[len("data: "):]) == chunk(text, None)


def test_a_chunk_without_one_place_for_the_text_is_rendered_whole() -> None:
    assert text_events(lambda text, finish: {"a": text, "b": text}) is None
    assert text_events(lambda text, finish: {"a": 1}) is None
