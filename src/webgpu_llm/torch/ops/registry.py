"""Registering Python kernels for ATen ops on the webgpu (PrivateUse1) dispatch key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

from .plans import planned

F = TypeVar("F", bound=Callable[..., Any])

_LIB = torch.library.Library("aten", "IMPL")
IMPLEMENTED: set[str] = set()


def register(name: str, fn: Callable[..., Any], plan: bool = True) -> None:
    """Register `fn` as the webgpu kernel of ATen op `name` ("add.Tensor", "relu", ...).

    `plan`: repeat calls with the same signature through launch plans (see plans.py); off for
    ops that only make views or allocate.
    """
    _LIB.impl(name, planned(fn) if plan else fn, "PrivateUse1")
    IMPLEMENTED.add(name)


def impl(*names: str, plan: bool = True) -> Callable[[F], F]:
    """Decorator form of `register`."""

    def deco(fn: F) -> F:
        for name in names:
            register(name, fn, plan)
        return fn

    return deco


def is_device(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == "webgpu"
