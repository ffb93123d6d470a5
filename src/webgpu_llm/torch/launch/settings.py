"""The torch device's tuning: one settings object, changed only through `configure`.

The kernels' shape knobs default to their measured values (kernels/); these settings replace
them where a benchmark or a test tries others. A launch plan repeats the kernels its first call
chose, so `configure` forgets the plans (ops/plans.py): the next calls choose again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

Shapes = Mapping[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class Settings:
    # (threads per workgroup, output columns per workgroup) of the fused mat-vecs of these
    # (columns, input length), in place of kernels/fused_linear.default_shape
    matvec_shapes: Shapes = field(default_factory=lambda: MappingProxyType({}))
    # prompt matmuls of f16 tensors on the f16 tiles (kernels/strided_matmul.tile_matmul_kernel):
    # "auto" where the device has them and passes their check (kernels/mma.f16_usable), "off",
    # or "emulate" (the tiles' arithmetic without matrix units, for tests)
    tiles: str = "auto"


TILE_MODES = ("auto", "off", "emulate")


_current = Settings()


def settings() -> Settings:
    """The settings the device's launches use now."""
    return _current


def configure(**changes: Any) -> Settings:
    """Change the named settings (see `Settings`; the others keep their values) and forget the
    launch plans. `configure(matvec_shapes={})` restores the mat-vecs' defaults."""
    from ..ops import plans  # (the ops import the launchers, which import this module)

    global _current
    if changes.get("tiles", "auto") not in TILE_MODES:
        raise ValueError(f"tiles must be one of {', '.join(TILE_MODES)}, not {changes['tiles']!r}")
    if "matvec_shapes" in changes:
        changes["matvec_shapes"] = MappingProxyType(dict(changes["matvec_shapes"]))
    _current = replace(_current, **changes)
    plans.clear()
    return _current
