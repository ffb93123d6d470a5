"""The f16-tile prompt matmul whose subgroups load their fragments from memory (kernels/mma.py
f16_direct_kernel, after f16_rows_kernel made x's f16 copy) against numpy: emulated everywhere,
the matrix units where the adapter has them, Tint on the real-tile WGSL."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_harness import f16_rounded, f16_tile_modes, read, rel_err, tint_check
from test_kernels_linear import _weight

from webgpu_llm.kernels.common import pack_state
from webgpu_llm.kernels.linear import LinearSpec, Segment
from webgpu_llm.kernels.mma import (
    TileShape,
    direct_ok,
    f16_direct_kernel,
    f16_matmul_grid,
    f16_rows_grid,
    f16_rows_kernel,
)
from webgpu_llm.runtime.program import Program

h = f16_rounded


def _run(gpu, spec, bufs, t, emulate, shape):
    """x's f16 copy, then the matmul, in one Program (the copy holds a token block past t)."""
    xh = gpu.buffer((t + shape.bm) * spec.kp * 2)
    st = gpu.upload(pack_state(n=t))
    prog = Program(gpu, "direct")
    prog.add(f16_rows_kernel(spec.k), {"st": st, "x": bufs["x"], "xh": xh}, f16_rows_grid(spec.k)(t))
    prog.add(f16_direct_kernel(spec, shape, emulate), {"st": st, "xh": xh, **bufs}, f16_matmul_grid(spec, shape)(t))
    prog.run(t)
    if emulate:
        tint_check(f16_direct_kernel(spec, shape, False))


SHAPES = [TileShape(direct=True), TileShape(1, 1, 1, 2, direct=True), TileShape(2, 2, 4, 4, direct=True),
          TileShape(1, 4, 2, 2, direct=True, tokens_first=True)]


@pytest.mark.parametrize("shape", SHAPES)
def test_f16_direct_store(gpu, shape):
    """70 tokens and 112 rows cross the workgroup's tile both ways; rows of 72 inputs end within
    a unit (the copy's padding is zeros)."""
    rng = np.random.default_rng(31)
    k, rows, t = 72, 112, 70
    w, wb = _weight(gpu, "f16", rows, k, rng)
    x = (rng.standard_normal((t, k)) * 3).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment("f16", rows),))
    for emulate in f16_tile_modes(gpu):
        yb = gpu.buffer(rows * t * 4)
        _run(gpu, spec, {"w0": wb, "x": gpu.upload(x), "y": yb}, t, emulate, shape)
        assert rel_err(read(gpu, yb, (t, rows)), h(x) @ w.T) < 1e-5, (shape, emulate)


@pytest.mark.parametrize("shape", [TileShape(direct=True), TileShape(1, 2, 1, 4, direct=True)])
def test_f16_direct_epilogues(gpu, shape):
    """Gated pairs over two segments (a block of first rows, then of second rows), three
    segments of adjacent pairs, K split over grid z, a window of the batch's tokens."""
    rng = np.random.default_rng(32)
    k, f, t = 256, 48, 67
    wg_, gb = _weight(gpu, "f16", f, k, rng)
    wu, ub = _weight(gpu, "f16", f, k, rng)
    wv, vb = _weight(gpu, "f16", 32, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    xh = h(x)
    for emulate in f16_tile_modes(gpu):
        spec = LinearSpec(k=k, segments=(Segment("f16", f), Segment("f16", f)), epilogue="silu_mul")
        yb = gpu.buffer(f * t * 4)
        _run(gpu, spec, {"w0": gb, "w1": ub, "x": gpu.upload(x), "y": yb}, t, emulate, shape)
        g, u = xh @ wg_.T, xh @ wu.T
        assert rel_err(read(gpu, yb, (t, f)), g / (1 + np.exp(-g)) * u) < 1e-4, emulate
        spec = LinearSpec(k=k, segments=(Segment("f16", f), Segment("f16", 32), Segment("f16", f)))
        yb = gpu.buffer((2 * f + 32) * t * 4)
        _run(gpu, spec, {"w0": gb, "w1": vb, "w2": ub, "x": gpu.upload(x), "y": yb}, t, emulate, shape)
        assert rel_err(read(gpu, yb, (t, 2 * f + 32)), xh @ np.concatenate([wg_, wv, wu]).T) < 1e-5, emulate
        spec = LinearSpec(k=k, segments=(Segment("f16", f),), epilogue="partial", splits=3)
        yb = gpu.buffer(t * 3 * f * 4)
        _run(gpu, spec, {"w0": gb, "x": gpu.upload(x), "y": yb}, t, emulate, shape)
        part = read(gpu, yb, (t, 3, f))
        assert rel_err(part.sum(1), g) < 1e-5
        assert rel_err(part[:, 2], xh[:, 192:] @ wg_[:, 192:].T) < 1e-5  # units 6..7 of 0..7
        spec = LinearSpec(k=k, segments=(Segment("f16", f),), t0=64, tmax=64)
        yb = gpu.buffer(t * f * 4)
        _run(gpu, spec, {"w0": gb, "x": gpu.upload(x), "y": yb}, t, emulate, shape)
        y = read(gpu, yb, (t, f))
        assert rel_err(y[:3], g[64:]) < 1e-5 and not y[3:].any()


def test_f16_direct_eligibility():
    """f16 weights in whole fragments, dense rows, gated pairs with an even tile count across rows."""
    d = TileShape(direct=True)
    assert direct_ok(LinearSpec(k=64, segments=(Segment("f16", 32), Segment("f16", 16))), d)
    assert not direct_ok(LinearSpec(k=64, segments=(Segment("f16", 32),)), TileShape())  # not asked
    assert not direct_ok(LinearSpec(k=64, segments=(Segment("f16", 40),)), d)
    assert not direct_ok(LinearSpec(k=64, segments=(Segment("q8_0", 32),)), d)
    gated = LinearSpec(k=64, segments=(Segment("f16", 32), Segment("f16", 32)), epilogue="silu_mul")
    assert direct_ok(gated, d) and not direct_ok(gated, TileShape(2, 2, 2, 1, direct=True))
