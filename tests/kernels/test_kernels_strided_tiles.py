"""The torch device's prompt matmul on f16 tiles (kernels/strided_matmul.py `tile_matmul_kernel`)
against numpy: strided and broadcast operands, either layout of w, the `beta * c` term, f16 and
f32 outputs, several workgroup shapes; the tile products emulated everywhere, on the matrix
units where the adapter has them."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from kernel_harness import f16_rounded, f16_tile_modes, read, rel_err, run_kernel, tint_check

from webgpu_llm.kernels.mma import TileShape
from webgpu_llm.kernels.strided_matmul import TiledMatmulSpec, tile_matmul_grid, tile_matmul_kernel

NP = {"f32": np.float32, "f16": np.float16}


def _params(m, n, k, batch, a, w, c, y, alpha, beta) -> bytes:
    """The parameter block: sizes, then (offset, strides) of a, w, c and y in elements."""
    return struct.pack("<20I", m, n, k, batch, *a, *w, *c, *y) + struct.pack("<2f", alpha, beta) + struct.pack("<I", 0)


CASES = [  # (m, k, n, batch, a dtype, y dtype, w k-contiguous, c term, shape)
    (70, 75, 101, 2, "f16", "f32", True, False, TileShape()),
    (37, 64, 50, 3, "f16", "f16", False, True, TileShape(1, 1, 1, 1)),
    (33, 40, 90, 1, "f32", "f32", True, True, TileShape(2, 1, 2, 4)),
    (40, 100, 20, 2, "f16", "f32", False, False, TileShape(2, 2, 1, 1, ku=2)),  # 64-input steps, the last partial
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}")
def test_tile_matmul(gpu, case):
    m, k, n, batch, adt, ydt, kmajor, with_c, shape = case
    rng = np.random.default_rng(41)
    a = rng.standard_normal((batch, m, k)).astype(NP[adt])
    # w: one matrix for every batch (stride 0), stored [N, K] (k-contiguous, nn.Linear's) or [K, N]
    w = rng.standard_normal((k, n)).astype(np.float16)
    w_store = np.ascontiguousarray(w.T) if kmajor else w
    w_strides = (0, 1, k) if kmajor else (0, n, 1)  # (batch, k, n)
    c = rng.standard_normal((1, n)).astype(np.float32)  # broadcast over batch and rows
    alpha, beta = 1.5, (0.5 if with_c else 0.0)
    want = alpha * (f16_rounded(a).astype(np.float64) @ w.astype(np.float64))
    if with_c:
        want = want + beta * c[None]
    spec = TiledMatmulSpec(adt, "f16", ydt, "f32" if with_c else None, w_kmajor=kmajor)
    y_off = 3  # an output that starts past the buffer's start
    params = _params(m, n, k, batch, (0, m * k, k, 1), (0, *w_strides), (0, 0, 0, 1) if with_c else (0, 0, 0, 0),
                     (y_off, m * n, n, 1), alpha, beta)
    ny = y_off + batch * m * n
    bufs = {"A": gpu.upload(a), "W": gpu.upload(w_store), "P": gpu.upload(np.frombuffer(params, np.uint32))}
    if with_c:
        bufs["C"] = gpu.upload(c)
    for emulate in f16_tile_modes(gpu):
        bufs["Y"] = gpu.buffer(-(-ny * np.dtype(NP[ydt]).itemsize // 4) * 4)
        kernel = tile_matmul_kernel(spec, shape, emulate)
        if emulate:
            tint_check(tile_matmul_kernel(spec, shape))
        run_kernel(gpu, kernel, bufs, tile_matmul_grid(m, n, batch, shape))
        got = read(gpu, bufs["Y"], ny, NP[ydt])[y_off:].reshape(batch, m, n).astype(np.float32)
        assert rel_err(got, want.astype(np.float32)) < (1e-5 if ydt == "f32" else 1e-3), emulate
