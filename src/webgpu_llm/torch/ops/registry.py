"""Registering Python kernels for ATen ops on the webgpu (PrivateUse1) dispatch key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

_LIB = torch.library.Library("aten", "IMPL")
IMPLEMENTED: set[str] = set()


def impl(*names: str) -> Callable[[F], F]:
    """Register the decorated function for the ATen ops `names` ("add.Tensor", "relu", ...)."""

    def deco(fn: F) -> F:
        for name in names:
            _LIB.impl(name, fn, "PrivateUse1")
            IMPLEMENTED.add(name)
        return fn

    return deco


def register(name: str, fn: Callable[..., Any]) -> None:
    _LIB.impl(name, fn, "PrivateUse1")
    IMPLEMENTED.add(name)


def is_device(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == "webgpu"
