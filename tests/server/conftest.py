"""Fixtures of the server tests: the tiny model with a long context, a server process on it
shared by the tests, and an `openai` client of that server (server_helpers.py has the rest)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import API_KEY, TINY_CTX, ServerProcess

pytest.importorskip("transformers")
from reference_models import make_tiny_llama


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_tiny_llama(tmp_path_factory.mktemp("tiny-serve"), seed=5)
    for name, key in (("config.json", "max_position_embeddings"), ("tokenizer_config.json", "model_max_length")):
        cfg = json.loads((path / name).read_text())
        cfg[key] = TINY_CTX
        (path / name).write_text(json.dumps(cfg, indent=2))
    return path


@pytest.fixture(scope="session")
def server(tiny_model: Path) -> Iterator[ServerProcess]:
    """The tiny model behind an API key, 4 sequence slots: shared by most tests."""
    s = ServerProcess("--model", str(tiny_model), "--ctx", str(TINY_CTX), "--parallel", "4",
                      "--api-key", API_KEY, "--alias", "tiny")
    yield s
    s.stop()


@pytest.fixture
def client(server: ServerProcess) -> Any:
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
