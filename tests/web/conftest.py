"""Fixtures of the browser-runtime tests: SmolLM2 exported once (the CPU tuning, a 256-token
context) with the Python engine built on the very same Programs, and a local server for the
page and the export."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_helpers import Exported

from model_files import smollm2_or_skip

CTX = 256


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exported]:
    from webgpu_llm.engine.export import build_session, write_plan

    smollm2_or_skip()
    out = tmp_path_factory.mktemp("smollm2-export")
    src, session = build_session(None, ctx=CTX, tuning="cpu")
    plan = write_plan(src, session, out)
    yield Exported(out, plan, session, src, src.tokenizer())
    src.close()


@pytest.fixture(scope="session")
def bad_exports(tmp_path_factory: pytest.TempPathFactory, exported: Exported) -> Path:
    """Folders that are not usable exports, each named for what is wrong with it."""
    import json

    root = tmp_path_factory.mktemp("bad-exports")
    (root / "not-json").mkdir()
    (root / "not-json" / "plan.json").write_text("<html>hello</html>")
    (root / "not-export").mkdir()
    (root / "not-export" / "plan.json").write_text(json.dumps({"model": "something else"}))
    for name, change in (("needs-f16", {"features": ["shader-f16"]}),
                         ("too-big", {"limits": {**exported.plan["limits"],
                                                 "maxStorageBufferBindingSize": 64 * 2**30,
                                                 "maxBufferSize": 64 * 2**30}})):
        (root / name).mkdir()
        (root / name / "plan.json").write_text(json.dumps({**exported.plan, **change}))
    (root / "truncated").mkdir()
    (root / "truncated" / "plan.json").write_text(json.dumps(exported.plan))
    (root / "truncated" / "tokenizer.json").write_bytes((exported.out / "tokenizer.json").read_bytes())
    (root / "truncated" / "weights-000.bin").write_bytes(b"\0" * 1000)
    return root


@pytest.fixture(scope="session")
def web_server(exported: Exported, bad_exports: Path) -> Iterator[Any]:
    from webgpu_llm.web import WebServer

    server = WebServer(mounts={"model": exported.out, "bad": bad_exports}).start()
    yield server
    server.stop()
