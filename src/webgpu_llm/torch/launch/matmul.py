"""Launching the batched strided matmul (kernels/strided_matmul.py): y = alpha * a @ w + beta * c."""

from __future__ import annotations

import struct

import torch

from ...kernels.dtypes import vec4_elems
from ...kernels.mma import TileShape, f16_usable
from ...kernels.strided import grid_rows
from ...kernels.strided_matmul import (
    TM,
    TN,
    GemvSpec,
    TiledMatmulSpec,
    gemv_kernel,
    tile_matmul_grid,
    tile_matmul_kernel,
    tiled_matmul_kernel,
)
from ..context import ctx
from ..dtypes import dtype_of, name_of
from .common import binding, compiled
from .settings import settings

GEMV_ROWS = 8  # up to this many rows use the mat-vec kernel
TILES = TileShape()  # the f16 tiles' workgroup (the engine's default)


def _on_tiles(a: torch.Tensor, w: torch.Tensor) -> bool | None:
    """Whether a prompt matmul of f16 operands runs on the f16 tiles, emulated (True) or on
    the matrix units (False); None: the f32 tiled matmul."""
    mode = settings().tiles
    if mode == "off" or a.dtype != torch.float16 or w.dtype != torch.float16:
        return None
    gpu = ctx().gpu
    if mode == "emulate":
        return True if gpu.has_f16 else None
    return False if f16_usable(gpu) else None


def matmul(y: torch.Tensor, a: torch.Tensor, w: torch.Tensor, c: torch.Tensor | None = None,
           alpha: float = 1.0, beta: float = 1.0) -> torch.Tensor:
    """y = alpha * a @ w + beta * c for 3-d operands [batch, M, K] @ [batch, K, N] (batch may
    broadcast with stride 0); c broadcasts to [batch, M, N]."""
    batch, m, k = a.shape
    n = w.shape[2]
    if y.numel() == 0:
        return y
    names = (name_of(a.dtype), name_of(w.dtype), name_of(y.dtype), name_of(c.dtype) if c is not None else None)
    sa, sw, sy = a.stride(), w.stride(), y.stride()
    sc = [0, 0, 0]
    if c is not None:
        sc = [0 if c.shape[i] == 1 else c.stride(i) for i in range(3)]
    words = [m, n, k, batch,
             a.storage_offset(), sa[0] if a.shape[0] > 1 else 0, sa[1], sa[2],
             w.storage_offset(), sw[0] if w.shape[0] > 1 else 0, sw[1], sw[2],
             c.storage_offset() if c is not None else 0, *sc,
             y.storage_offset(), *sy]
    binds = [binding(y), binding(a), binding(w)]
    if m <= GEMV_ROWS:
        u = vec4_elems(dtype_of(w.dtype))
        wvec = (sw[1] == 1 and k % u == 0 and w.storage_offset() % u == 0 and sw[2] % u == 0
                and (w.shape[0] == 1 or sw[0] % u == 0))
        gemv = GemvSpec(*names, wvec=wvec, rows=1 if m == 1 else GEMV_ROWS)
        kernel = compiled(("gemv", gemv), lambda: gemv_kernel(gemv))
        groups = -(-n // gemv.cols)
        grid = grid_rows(groups * batch)
        extra = [groups]
    else:
        tiled = TiledMatmulSpec(*names, w_kmajor=sw[1] == 1)
        emulate = _on_tiles(a, w)
        if emulate is None:
            kernel = compiled(("mm", tiled), lambda: tiled_matmul_kernel(tiled))
            grid = (-(-n // TN), -(-m // TM), batch)
        else:
            kernel = compiled(("mm_tiles", tiled, emulate), lambda: tile_matmul_kernel(tiled, TILES, emulate))
            grid = tile_matmul_grid(m, n, batch, TILES)
        extra = [0]
    if c is not None:
        binds.append(binding(c))
    params = struct.pack("<20I", *words) + struct.pack("<2f", alpha, beta) + struct.pack("<I", *extra)
    ctx().stream.launch(kernel, binds, params, grid)
    return y
