"""POST /v1/embeddings of `webgpu-llm serve` on all-MiniLM-L6-v2, through the official openai
client and raw HTTP: OpenAI's request and response shapes (input as text, texts, token ids;
float and base64), usage, vectors equal to sentence-transformers', concurrent requests batched
together, bad input as 4xx; chat and completions refused on an embedding model, and
embeddings refused on a text-generation model."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from server_helpers import API_KEY, ServerProcess

from model_files import minilm_or_skip, sentence_transformers_or_skip

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TEXTS = ["Hello world.", "The quick brown fox jumps over the lazy dog.", "A",
         "Embeddings put texts of similar meaning close together, whatever their length."]


@pytest.fixture(scope="module")
def embed_server() -> Iterator[ServerProcess]:
    s = ServerProcess("--model", str(minilm_or_skip()), "--api-key", API_KEY, "--alias", "minilm")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    path = minilm_or_skip()
    return sentence_transformers_or_skip()(str(path), device="cpu").encode(TEXTS, batch_size=len(TEXTS))


def post(server: ServerProcess, body: dict[str, Any], path: str = "/v1/embeddings") -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers=AUTH, timeout=120)


def test_openai_client_float_and_base64(embed_server, reference):
    import openai

    assert "embeddings at /v1/embeddings, texts of up to 256 tokens" in embed_server.log()
    client = openai.OpenAI(base_url=embed_server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    r = client.embeddings.create(model="minilm", input=TEXTS)  # the client asks for base64 and decodes it
    assert r.model == "minilm" and r.object == "list" and [d.index for d in r.data] == [0, 1, 2, 3]
    got = np.array([d.embedding for d in r.data], np.float32)
    assert got.shape == (4, 384)
    cos = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    assert cos.min() >= 0.9999
    plain = client.embeddings.create(model="minilm", input=TEXTS, encoding_format="float")
    assert np.array_equal(np.array([d.embedding for d in plain.data], np.float32), got)
    from transformers import AutoTokenizer

    tokens = sum(len(ids) for ids in AutoTokenizer.from_pretrained(str(minilm_or_skip()))(TEXTS)["input_ids"])
    assert r.usage.prompt_tokens == r.usage.total_tokens == tokens
    raw = post(embed_server, {"input": TEXTS[0], "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), "<f4")
    assert raw["data"][0]["object"] == "embedding" and np.array_equal(vec, got[0])


def test_token_id_inputs(embed_server):
    text = post(embed_server, {"input": "Hello world.", "encoding_format": "float"}).json()
    ids = [101, 7592, 2088, 1012, 102]  # the same text as its tokens
    one = post(embed_server, {"input": ids, "encoding_format": "float"}).json()
    two = post(embed_server, {"input": [ids, ids[:3]], "encoding_format": "float"}).json()
    assert one["data"][0]["embedding"] == text["data"][0]["embedding"] == two["data"][0]["embedding"]
    assert len(two["data"]) == 2 and two["usage"]["prompt_tokens"] == 8


def test_concurrent_requests_equal_each_alone(embed_server):
    """32 requests at once (the queue embeds those waiting together): each gets its own vectors."""
    alone = [post(embed_server, {"input": [t], "encoding_format": "float"}).json()["data"][0]["embedding"]
             for t in TEXTS]
    before = embed_server.metrics()["webgpu_llm_requests_total"]

    async def many() -> list[dict[str, Any]]:
        async with httpx.AsyncClient(headers=AUTH, timeout=300) as c:
            rs = await asyncio.gather(*(c.post(embed_server.url + "/v1/embeddings",
                                               json={"input": [TEXTS[i % 4], TEXTS[(i + 1) % 4]],
                                                     "encoding_format": "float"}) for i in range(32)))
        return [r.json() for r in rs]

    for i, r in enumerate(asyncio.run(many())):
        got = np.array([d["embedding"] for d in r["data"]], np.float32)
        want = np.array([alone[i % 4], alone[(i + 1) % 4]], np.float32)
        assert np.abs(got - want).max() < 1e-6, i
    assert embed_server.metrics()["webgpu_llm_requests_total"] == before + 32


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"input": []}, 400, "input: must be a text"),
    ({"input": [""]}, 400, "input: input 0 is empty"),
    ({"input": ["a", 1]}, 400, "input: must be a text"),
    ({"input": "word " * 300}, 400, "input 0 has 302 tokens, more than the 256 this model takes"),
    ({"input": [[101, 30522, 102]]}, 400, "token id 30522 is outside the vocabulary"),
    ({"input": "hi", "dimensions": 128}, 400, "dimensions 128: this model's vectors have 384 values"),
    ({"input": "hi", "encoding_format": "hex"}, 400, "encoding_format"),
    ({"input": "hi", "model": "gpt-4"}, 404, "'gpt-4' is not served here"),
])
def test_bad_input_is_a_4xx(embed_server, body, status, says):
    r = post(embed_server, body)
    assert r.status_code == status and says in r.json()["error"]["message"], r.text


def test_chat_and_completions_on_an_embedding_model(embed_server):
    for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
                       ("/v1/completions", {"prompt": "hi"})):
        r = post(embed_server, body, path)
        err = r.json()["error"]
        assert r.status_code == 400 and err["param"] == "model" and err["code"] == "model_not_supported"
        assert "'minilm' is an embedding model" in err["message"] and "/v1/embeddings" in err["message"]
    assert httpx.get(embed_server.url + "/health").json() == {"status": "ok"}


def test_embeddings_on_a_text_generation_model(server):
    r = httpx.post(server.url + "/v1/embeddings", json={"input": "hi"}, headers=AUTH, timeout=60)
    assert r.status_code == 400
    assert "'tiny' is a text-generation model, not an embedding model" in r.json()["error"]["message"]
