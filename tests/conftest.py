"""Shared fixtures: one GPU device per backend for the whole session."""

from __future__ import annotations

import os
import sys
import zlib

import numpy as np
import pytest

from backends import backend_names
from webgpu_llm import environment
from webgpu_llm.errors import GpuError, UserError
from webgpu_llm.runtime.gpu import Gpu, open_gpu

# Tests keep Dawn's command validation (users' runs skip it): our commands' mistakes show here.
# test_cli.py checks the unvalidated default in a process of its own.
os.environ.setdefault(environment.VALIDATE, "1")

_GPUS: dict[str, Gpu | None] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--as-gpu", action="store_true",
                     help="treat a CPU adapter (llvmpipe) as a GPU: the GPU's kernels and default tuning "
                          "(subgroup kernels, folds, batched tiles) run where CI has no GPU")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--as-gpu"):
        Gpu.is_cpu = property(lambda self: False)  # type: ignore[method-assign,assignment]


@pytest.fixture(autouse=True)
def _seeded(request: pytest.FixtureRequest) -> None:
    """numpy's and torch's global generators seeded per test: a test that draws from them
    sees the same numbers in every run, so a failure reproduces."""
    seed = zlib.crc32(request.node.nodeid.encode())
    np.random.seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


def get_gpu(backend: str) -> Gpu:
    if backend not in _GPUS:
        try:
            _GPUS[backend] = open_gpu(options=environment.gpu_options(backend=backend))
        except (GpuError, UserError) as e:
            _GPUS[backend] = None
            print(f"backend {backend} unavailable: {e}")
    g = _GPUS[backend]
    if g is None:
        pytest.skip(f"no WebGPU adapter on backend {backend}")
    return g


@pytest.fixture(scope="session", params=backend_names())
def gpu(request: pytest.FixtureRequest) -> Gpu:
    """Each test that takes `gpu` runs once per backend."""
    return get_gpu(request.param)


@pytest.fixture(scope="session")
def wgpu_gpu() -> Gpu:
    """The default backend only (for the slower model-level tests)."""
    return get_gpu(backend_names()[0])
