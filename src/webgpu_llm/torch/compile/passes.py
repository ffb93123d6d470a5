"""Fusion passes over ATen FX graphs (filled in by the pattern modules)."""

from __future__ import annotations

import torch


def fuse(gm: torch.fx.GraphModule) -> None:
    gm.graph.eliminate_dead_code()
    gm.recompile()
