"""Real answers from the bundled SmolLM2-135M-Instruct through `webgpu-llm serve` (the default
model, its chat template): a known fact streamed, and a system prompt with the model ending its
turn by itself."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest
from server_helpers import ServerProcess

from model_files import smollm2_or_skip


@pytest.fixture(scope="module")
def smollm2() -> Iterator[ServerProcess]:
    smollm2_or_skip()
    s = ServerProcess("--ctx", "512", "--parallel", "2")  # no --model: the bundled one
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(smollm2: ServerProcess) -> Any:
    return openai.OpenAI(base_url=smollm2.url + "/v1", api_key="none", max_retries=0, timeout=300)


def test_a_real_chat_answer_streamed(client: Any) -> None:
    model = client.models.list().data[0].id
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    stream = client.chat.completions.create(model=model, messages=ask, max_tokens=8, temperature=0, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream]
    assert "Paris" in "".join(pieces) and len([p for p in pieces if p]) > 1, pieces


def test_a_system_prompt_and_a_stop_at_the_end_of_turn(client: Any) -> None:
    model = client.models.list().data[0].id
    r = client.chat.completions.create(model=model, max_tokens=24, temperature=0, messages=[
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Reply with OK."}])
    text = r.choices[0].message.content
    # the model ends its turn by itself: the end-of-turn token stops it and is not shown
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens < 24, r
    assert "help" in text and "<|im_end|>" not in text, text
