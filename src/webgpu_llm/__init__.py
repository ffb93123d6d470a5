"""webgpu-llm: LLM inference on WebGPU (WGSL compute shaders through wgpu-native or Dawn).

    import webgpu_llm as wl
    llm = wl.load()                     # the bundled SmolLM2-135M-Instruct, or a path
    print(llm.generate_text("Hello"))
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["LLM", "GpuError", "GpuOptions", "ModelFileError", "SamplingParams", "Settings", "UserError", "load",
           "open_gpu"]


def __getattr__(name: str) -> Any:
    # lazy: `import webgpu_llm.torch` or the CLI's --help should not pay for the engine
    if name in ("LLM", "load"):
        from . import api

        return getattr(api, name)
    if name in ("UserError", "GpuError", "ModelFileError"):
        from . import errors

        return getattr(errors, name)
    if name in ("SamplingParams", "Settings"):
        from . import engine

        return getattr(engine, name)
    if name in ("open_gpu", "GpuOptions"):
        from .runtime import gpu

        return getattr(gpu, name)
    raise AttributeError(name)
