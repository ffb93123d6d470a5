"""The WebGPU backends the tests run on (WEBGPU_LLM_TEST_BACKENDS=wgpu limits them to one)."""

from __future__ import annotations

import os


def backend_names() -> list[str]:
    env = os.environ.get("WEBGPU_LLM_TEST_BACKENDS")
    return env.split(",") if env else ["wgpu", "dawn"]
