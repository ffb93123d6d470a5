"""The process-wide GPU behind the torch `webgpu` device, opened on first use.

It opens on the backend given to `set_backend()`, else on the default backend that the front
end's edge passes in at import, with the device options passed in there too (`webgpu_llm.torch`
reads them from the environment once, through `environment.py`; nothing here reads it).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..runtime.gpu import Gpu, GpuOptions, default_gpu
from .memory import Pool
from .stream import Stream


@dataclass
class Context:
    gpu: Gpu
    pool: Pool
    stream: Stream


_CTX: Context | None = None
_backend: str | None = None  # set_backend()'s choice
_default_backend = "wgpu"  # without one: what the front end's edge passed in
_options = GpuOptions()  # the device's options (validation, features), from the front end's edge


def set_backend(name: str) -> None:
    """Pick `wgpu` or `dawn` before the device is first used (or set WEBGPU_LLM_TORCH_BACKEND)."""
    global _backend
    if _CTX is not None and _CTX.gpu.backend != name:
        raise RuntimeError(f"the webgpu device already runs on {_CTX.gpu.backend!r}")
    _backend = name


def set_defaults(backend: str, options: GpuOptions) -> None:
    """The backend to open on when `set_backend()` was not called, and the device's options
    (the front end passes the environment's choices here at import)."""
    global _default_backend, _options
    _default_backend = backend
    _options = options


def backend_name() -> str:
    return _backend or _default_backend


def ctx() -> Context:
    global _CTX
    if _CTX is None:
        # bounds checks kept: a torch op indexes with values from users' tensors (GpuOptions.robust)
        gpu = default_gpu(replace(_options, backend=backend_name(), robust=True))
        pool = Pool(gpu)
        _CTX = Context(gpu, pool, Stream(gpu, pool))
    return _CTX


def opened() -> bool:
    return _CTX is not None
