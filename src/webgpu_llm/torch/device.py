"""Registration of PrivateUse1 as the `webgpu` device, in pure Python.

torch >= 2.6 can take the hooks and the device guard of a PrivateUse1 backend from Python
(`_setup_privateuseone_for_python_backend`); kernels are then registered with torch.library.
`torch.webgpu` becomes the backend module below.
"""

from __future__ import annotations

import types

import torch

from . import context

NAME = "webgpu"


def is_available() -> bool:
    """True when a WebGPU adapter can be opened (opens it on first call)."""
    try:
        context.ctx()
    except Exception:
        return False
    return True


def device_count() -> int:
    return 1 if is_available() else 0


def synchronize(device: object = None) -> None:
    """Submit queued launches and wait for the GPU to finish them."""
    if context.opened():
        context.ctx().stream.wait()


def empty_cache() -> None:
    """Give the device's cached, unused buffers back to WebGPU."""
    if context.opened():
        c = context.ctx()
        c.stream.release_caches()
        c.stream.wait()
        c.pool.empty_cache()


def memory_allocated() -> int:
    """Bytes of WebGPU buffers the device holds (in use or cached for reuse)."""
    return context.ctx().pool.allocated if context.opened() else 0


def _module() -> types.ModuleType:
    m = types.ModuleType("torch.webgpu", "The webgpu device (webgpu_llm.torch)")
    m.is_available = is_available  # type: ignore[attr-defined]
    m.device_count = device_count  # type: ignore[attr-defined]
    m.synchronize = synchronize  # type: ignore[attr-defined]
    m.empty_cache = empty_cache  # type: ignore[attr-defined]
    m.memory_allocated = memory_allocated  # type: ignore[attr-defined]
    m.current_device = lambda: 0  # type: ignore[attr-defined]
    m.set_device = lambda device: None  # type: ignore[attr-defined]
    m.is_initialized = context.opened  # type: ignore[attr-defined]
    m._is_in_bad_fork = lambda: False  # type: ignore[attr-defined]
    m.manual_seed = lambda seed: None  # type: ignore[attr-defined]
    m.manual_seed_all = lambda seed: None  # type: ignore[attr-defined]
    m.get_amp_supported_dtype = lambda: [torch.float16, torch.bfloat16]  # type: ignore[attr-defined]
    return m


class _Hooks(torch._C._acc.PrivateUse1Hooks):
    def is_available(self) -> bool:
        return is_available()

    def has_primary_context(self, dev_id: int) -> bool:
        return context.opened()

    def is_built(self) -> bool:
        return True


class _Guard(torch._C._acc.DeviceGuard):
    def type_(self) -> object:
        return torch._C._autograd.DeviceType.PrivateUse1


_registered = False


def register() -> None:
    """Name PrivateUse1 `webgpu` and install the backend module, hooks and device guard."""
    global _registered
    if _registered:
        return
    current = torch._C._get_privateuse1_backend_name()
    if current not in ("privateuseone", NAME):
        raise RuntimeError(f"PrivateUse1 is already registered as {current!r} in this process")
    from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

    if current == NAME:  # another copy of this module got there first
        _registered = True
        return
    _setup_privateuseone_for_python_backend(NAME, _module(), _Hooks(), _Guard())
    _patch_printing()
    _registered = True


def _patch_printing() -> None:
    """Format device tensors from a CPU copy: torch's formatter runs a dozen ops otherwise."""
    import torch._tensor_str as ts

    original = ts._tensor_str

    def tensor_str(self: torch.Tensor, indent: int) -> str:
        if self.device.type == NAME:
            self = self.cpu()
        return original(self, indent)

    ts._tensor_str = tensor_str
