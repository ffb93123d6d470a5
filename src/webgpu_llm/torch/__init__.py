"""The `webgpu` PyTorch device and the `torch.compile(backend="webgpu")` backend.

`import webgpu_llm.torch` registers the device; tensors then move with `.to("webgpu")`.
Ops without a WebGPU kernel run on the CPU (see `fallback_report()`).
"""

from __future__ import annotations

from . import device as _device

_device.register()

from . import compile as _compile  # noqa: E402
from . import ops as _ops  # noqa: E402  (kernels register after the device exists)
from .compile import graph_report  # noqa: E402
from .context import set_backend  # noqa: E402
from .device import device_count, empty_cache, is_available, memory_allocated, synchronize  # noqa: E402
from .fallback import FallbackWarning, fallback_report, reset_fallback_report  # noqa: E402

__all__ = ["FallbackWarning", "device_count", "empty_cache", "fallback_report", "graph_report", "is_available",
           "memory_allocated", "reset_fallback_report", "set_backend", "synchronize"]
del _ops, _compile
