"""The process-wide GPU behind the torch `webgpu` device, opened on first use.

It opens on the backend given to `set_backend()`, else on the default backend that the front
end's edge passes in at import (`webgpu_llm.torch` reads WEBGPU_LLM_TORCH_BACKEND there, once;
nothing here reads the environment).
"""

from __future__ import annotations

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
_backend: str | None = None  # set_backend()'s choice
_default_backend = "wgpu"  # without one: what the front end's edge passed in


def set_backend(name: str) -> None:
    """Pick `wgpu` or `dawn` before the device is first used (or set WEBGPU_LLM_TORCH_BACKEND)."""
    global _backend
    if _CTX is not None and _CTX.gpu.backend != name:
        raise RuntimeError(f"the webgpu device already runs on {_CTX.gpu.backend!r}")
    _backend = name


def set_default_backend(name: str) -> None:
    """The backend to open on when `set_backend()` was not called (the front end passes the
    environment's choice here at import)."""
    global _default_backend
    _default_backend = name


def backend_name() -> str:
    return _backend or _default_backend


def ctx() -> Context:
    global _CTX
    if _CTX is None:
        gpu = default_gpu(backend_name())
        pool = Pool(gpu)
        _CTX = Context(gpu, pool, Stream(gpu, pool))
    return _CTX


def opened() -> bool:
    return _CTX is not None
