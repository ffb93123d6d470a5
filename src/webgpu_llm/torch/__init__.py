"""The `webgpu` PyTorch device and the `torch.compile(backend="webgpu")` backend.

    import torch, webgpu_llm.torch as wt
    model = AutoModelForCausalLM.from_pretrained(...).to("webgpu")      # eager: one kernel per op
    wt.fuse_layers(model)               # eager, fewer ops: RMSNorm, SwiGLU gate, RoPE fused
    model.forward = torch.compile(model.forward, backend="webgpu")      # fused, replayed graphs
    model.generate(ids.to("webgpu"), cache_implementation="static")
    wt.fallback_report()  # ops that ran on the CPU (none for Llama/Qwen2)

`import webgpu_llm.torch` registers PrivateUse1 as `webgpu` (pure Python, torch >= 2.10).
The GPU opens on first use, on wgpu-native, or Dawn with `set_backend("dawn")` or
WEBGPU_LLM_TORCH_BACKEND=dawn. Layout: tensors.py/memory.py (storage), stream.py (launch
batching), launch/ (tensors -> kernel specs of the package's kernels/, parameter blocks and
launches; settings.py: the device's tuning, changed with `configure`), ops/ (ATen
registrations, launch plans), fallback.py, fused_ops.py, fuse_layers.py (eager) and compile/
(FX passes, record and replay).
"""

from __future__ import annotations

import torch as _torch

# torch 2.10 added the hooks a device registers through from Python (torch._C._acc); tested with
# 2.10 to 2.14 (scripts/test-torch-versions.sh)
MIN_TORCH = "2.10"
if not hasattr(_torch._C, "_acc"):
    raise ImportError(f"webgpu_llm.torch needs torch {MIN_TORCH} or newer, which can register a device from "
                      f"Python (this is torch {_torch.__version__}): pip install 'torch>={MIN_TORCH}'")

from . import context as _context  # noqa: E402
from . import device as _device  # noqa: E402


def _read_environment() -> None:
    """The torch front end's environment, read here once at import and passed down: the backend
    the device opens on unless `set_backend()` picks one (WEBGPU_LLM_TORCH_BACKEND, default wgpu)."""
    from .. import environment

    _context.set_defaults(environment.torch_backend(), environment.gpu_options())


_read_environment()
_device.register()

from . import compile as _compile  # noqa: E402
from . import ops as _ops  # noqa: E402  (kernels register after the device exists)
from .compile import graph_report  # noqa: E402
from .context import set_backend  # noqa: E402
from .device import device_count, empty_cache, is_available, memory_allocated, synchronize  # noqa: E402
from .fallback import FallbackWarning, fallback_report, reset_fallback_report  # noqa: E402
from .fuse_layers import fuse_layers, unfuse_layers  # noqa: E402
from .launch.settings import Settings, configure, settings  # noqa: E402

__all__ = ["FallbackWarning", "Settings", "configure", "device_count", "empty_cache", "fallback_report", "fuse_layers",
           "graph_report", "is_available", "memory_allocated", "reset_fallback_report", "set_backend", "settings",
           "synchronize", "unfuse_layers"]
del _ops, _compile
