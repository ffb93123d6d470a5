"""The process-wide GPU behind the torch `webgpu` device, opened on first use."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..runtime.gpu import Gpu, default_gpu
from .memory import Pool
from .stream import Stream

BACKEND_ENV = "WEBGPU_LLM_TORCH_BACKEND"


@dataclass
class Context:
    gpu: Gpu
    pool: Pool
    stream: Stream


_CTX: Context | None = None
_backend: str | None = None


def set_backend(name: str) -> None:
    """Pick `wgpu` or `dawn` before the device is first used (or set WEBGPU_LLM_TORCH_BACKEND)."""
    global _backend
    if _CTX is not None and _CTX.gpu.backend != name:
        raise RuntimeError(f"the webgpu device already runs on {_CTX.gpu.backend!r}")
    _backend = name


def backend_name() -> str:
    return _backend or os.environ.get(BACKEND_ENV, "wgpu")


def ctx() -> Context:
    global _CTX
    if _CTX is None:
        gpu = default_gpu(backend_name())
        pool = Pool(gpu)
        _CTX = Context(gpu, pool, Stream(gpu, pool))
    return _CTX


def opened() -> bool:
    return _CTX is not None
