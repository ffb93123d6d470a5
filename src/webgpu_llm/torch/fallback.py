"""Ops without a WebGPU kernel run on the CPU: inputs go down, results come back up.

Each op warns once, and `fallback_report()` counts every call, so a model that should run
entirely on the GPU (compiled mode) can be checked for stragglers.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import torch
from torch.utils._pytree import tree_map

from .ops.registry import is_device

_counts: Counter[str] = Counter()
_warned: set[str] = set()
_LIB = torch.library.Library("_", "IMPL")


class FallbackWarning(UserWarning):
    """An op ran on the CPU because the webgpu device has no kernel for it."""


def fallback_report() -> dict[str, int]:
    """{op name: calls that fell back to the CPU} since the last reset, most frequent first."""
    return dict(_counts.most_common())


def reset_fallback_report() -> None:
    _counts.clear()


def _to_cpu(x: Any) -> Any:
    return x.cpu() if is_device(x) else x


def run_on_cpu(op: torch._ops.OpOverload, *args: Any, **kwargs: Any) -> Any:
    name = str(op).removeprefix("aten.")
    if name not in _warned:
        _warned.add(name)
        warnings.warn(f"webgpu: {name} has no WebGPU kernel and runs on the CPU", FallbackWarning,
                      stacklevel=3)
    _counts[name] += 1
    cpu_args, cpu_kwargs = tree_map(_to_cpu, args), tree_map(_to_cpu, kwargs)
    out = op(*cpu_args, **cpu_kwargs)

    # Copy mutated arguments back into the device tensors they came from.
    mutated: dict[int, torch.Tensor] = {}
    for i, a in enumerate(op._schema.arguments):
        if a.alias_info is None or not a.alias_info.is_write:
            continue
        dev = kwargs.get(a.name) if a.kwarg_only or i >= len(args) else args[i]
        cpu = cpu_kwargs.get(a.name) if a.kwarg_only or i >= len(args) else cpu_args[i]
        if is_device(dev):
            if tuple(dev.shape) != tuple(cpu.shape):
                dev.resize_(cpu.shape)
            dev.copy_(cpu)
            mutated[id(cpu)] = dev

    def back(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            dev = mutated.get(id(x))
            return dev if dev is not None else x.to("webgpu")
        return x

    return tree_map(back, out)


_LIB.fallback(run_on_cpu, "PrivateUse1")
