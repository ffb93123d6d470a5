"""Helpers for kernel tests: run one kernel on buffers and read results back."""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from webgpu_llm import environment
from webgpu_llm.kernels.common import pack_state
from webgpu_llm.runtime.gpu import Gpu, open_gpu
from webgpu_llm.runtime.program import Kernel, Program


def run_kernel(gpu: Gpu, kernel: Kernel, buffers: dict[str, Any], grid: Any, n: int = 1, **state: Any) -> None:
    st = gpu.upload(pack_state(**{"n": n, **state}))
    prog = Program(gpu, kernel.name)
    prog.add(kernel, {"st": st, **buffers}, grid)
    prog.run(n)


def read(gpu: Gpu, buf: Any, shape: tuple[int, ...] | int, dtype: Any = np.float32) -> np.ndarray:
    shape = (shape,) if isinstance(shape, int) else shape
    return gpu.read_array(buf, dtype, int(np.prod(shape))).reshape(shape)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def f16_rounded(a: np.ndarray) -> np.ndarray:
    """As the f16 tiles see it: rounded to f16."""
    return a.astype(np.float16).astype(np.float32)


def f16_tile_modes(gpu: Gpu) -> list[bool]:
    """emulate=True where the adapter has shader-f16 (else the test skips); the matrix units
    too where it has f16 tiles."""
    import pytest

    from webgpu_llm.kernels.mma import f16_usable

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    return [True, False] if f16_usable(gpu) else [True]


@functools.cache
def _null_gpu() -> Gpu:
    """Dawn's Null device: it runs nothing, but lists every feature (subgroup matrices too), so
    Tint parses and resolves there the WGSL that only a GPU with matrix units runs."""
    old = os.environ.get("WGPU_BACKEND_TYPE")
    os.environ["WGPU_BACKEND_TYPE"] = "Null"  # wgpudawn's way to pick a backend
    try:
        # the tests' options (command validation on): the first Dawn device sets the process's
        return open_gpu(options=environment.gpu_options(backend="dawn"))
    finally:
        if old is None:
            del os.environ["WGPU_BACKEND_TYPE"]
        else:
            os.environ["WGPU_BACKEND_TYPE"] = old


_tint_checked: set[str] = set()


def tint_check(kernel: Kernel) -> None:
    """The real-tile twin of an emulated kernel passes Tint (parser, types, uniformity) on
    Dawn's Null device; llvmpipe has no matrix units, so no test could run it there. Pipeline
    creation is left out: the Null device has only WebGPU's default limits."""
    import hashlib

    key = hashlib.sha1(kernel.wgsl.encode()).hexdigest()
    if key in _tint_checked:
        return
    null = _null_gpu()
    assert "chromium-experimental-subgroup-matrix" in null.features
    try:
        null.device.create_shader_module(code=kernel.wgsl, label=kernel.name)
    except Exception as e:
        raise AssertionError(f"{kernel.name}: Tint rejects the matrix-unit WGSL: {e}") from None
    _tint_checked.add(key)
