"""The compiler's fused kernels on Dawn, the backend the torch device is benchmarked on.

The device is process-wide (one backend per process) and the other torch tests open it on
wgpu-native, so the compile tests run again in a child process with the device on Dawn.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backends import backend_names

pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_compile_tests_pass_on_dawn() -> None:
    if "dawn" not in backend_names():
        pytest.skip("Dawn is not among WEBGPU_LLM_TEST_BACKENDS")
    pytest.importorskip("wgpudawn")
    env = {**os.environ, "WEBGPU_LLM_TORCH_BACKEND": "dawn"}
    script = Path(__file__).with_name("test_torch_compile.py")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", str(script)],
                       env=env, cwd=script.parent, capture_output=True, text=True, timeout=1800)
    tail = (r.stdout + r.stderr)[-4000:]
    if "no WebGPU adapter" in tail and " passed" not in tail:
        pytest.skip("no Dawn adapter")
    assert r.returncode == 0, tail
    assert " passed" in tail, tail
