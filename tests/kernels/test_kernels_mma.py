"""The int8 subgroup-matrix prompt matmul (kernels/mma.py) against numpy: its logic everywhere
(tiles computed with dot4I8Packed, `emulate`), the matrix units where the adapter has them."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_harness import read, rel_err, run_kernel, tint_check
from test_kernels_linear import _weight, qkv_case

from reference import int8_rounded, silu
from webgpu_llm.kernels.formats import FORMATS, MMA_FORMATS
from webgpu_llm.kernels.linear import LinearSpec, Segment
from webgpu_llm.kernels.mma import (
    has_int8_mma,
    mma_matmul_grid,
    mma_matmul_kernel,
    mma_ok,
    quantize_grid,
    quantize_kernel,
    usable,
)


def _modes(gpu) -> list[bool]:
    """emulate=True everywhere; the matrix units too where this device has them."""
    return [True, False] if usable(gpu) else [True]


def _run(gpu, spec, bufs, t, emulate, tokens_first=False, **state):
    """bufs["x"] quantized (quantize_kernel), then the matmul on its int8 units."""
    nu = spec.k // 32
    q = {"xq": gpu.buffer(t * nu * 32), "xs": gpu.buffer(t * nu * 8)}
    run_kernel(gpu, quantize_kernel(spec.k), {"x": bufs["x"], **q}, quantize_grid(spec.k)(t), n=t)
    run_kernel(gpu, mma_matmul_kernel(spec, emulate, tokens_first), {**bufs, **q}, mma_matmul_grid(spec)(t), n=t,
               **state)
    if emulate:
        tint_check(mma_matmul_kernel(spec, False, tokens_first))


@pytest.mark.parametrize("fmt", MMA_FORMATS)
def test_mma_matmul_every_format(gpu, fmt):
    """Each format's int8s and (d, m) against numpy on the int8-rounded x: 70 tokens and 75
    rows cross the 64 x 64 workgroup tile (a ragged last pair too)."""
    rng = np.random.default_rng(11)
    k = 512 if FORMATS[fmt].block == 256 else 160
    rows, t = 75, 70
    w, wb = _weight(gpu, fmt, rows, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment(fmt, rows),))
    for emulate in _modes(gpu):
        for tokens_first in (False, True) if fmt == "q8_0" else (False,):  # 2 x 2 workgroups, either order
            yb = gpu.buffer(rows * t * 4)
            _run(gpu, spec, {"w0": wb, "x": gpu.upload(x), "y": yb}, t, emulate, tokens_first)
            y = read(gpu, yb, (t, rows))
            assert rel_err(y, int8_rounded(x) @ w.T) < 1e-4, (emulate, tokens_first)
            assert rel_err(y, x @ w.T) < 3e-2, (emulate, tokens_first)


def check_epilogues(gpu, fmts: tuple[str, str], modes, run, x_seen) -> None:
    """SiLU·mul over two segments of formats `fmts`, the residual add, K split over grid z
    with partial sums, and a window of the batch's tokens (t0, tmax): `run(spec, buffers, t,
    mode)` launches a matmul, against numpy on x as `x_seen` rounds it."""
    rng = np.random.default_rng(12)
    k, f, t = 256, 45, 67
    wg_, gb = _weight(gpu, fmts[0], f, k, rng)
    wu, ub = _weight(gpu, fmts[1], f, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    xq = x_seen(x)
    wu_seen = wu.astype(np.float16).astype(np.float32) if fmts[1] == "bf16" else wu  # (bf16 -> f16 tiles)
    res = rng.standard_normal((t, f)).astype(np.float32)
    for mode in modes:
        spec = LinearSpec(k=k, segments=(Segment(fmts[0], f), Segment(fmts[1], f)), epilogue="silu_mul")
        yb = gpu.buffer(f * t * 4)
        run(spec, {"w0": gb, "w1": ub, "x": gpu.upload(x), "y": yb}, t, mode)
        assert rel_err(read(gpu, yb, (t, f)), silu(xq @ wg_.T) * (xq @ wu_seen.T)) < 1e-4
        spec = LinearSpec(k=k, segments=(Segment(fmts[0], f),), epilogue="add")
        yb = gpu.upload(res)
        run(spec, {"w0": gb, "x": gpu.upload(x), "y": yb}, t, mode)
        assert rel_err(read(gpu, yb, (t, f)), res + xq @ wg_.T) < 1e-4
        spec = LinearSpec(k=k, segments=(Segment(fmts[0], f),), epilogue="partial", splits=3)
        yb = gpu.buffer(t * 3 * f * 4)
        run(spec, {"w0": gb, "x": gpu.upload(x), "y": yb}, t, mode)
        part = read(gpu, yb, (t, 3, f))
        assert rel_err(part.sum(1), xq @ wg_.T) < 1e-4
        assert rel_err(part[:, 2], xq[:, 192:] @ wg_[:, 192:].T) < 1e-4  # units 6..7 of 0..7
        spec = LinearSpec(k=k, segments=(Segment(fmts[0], f),), t0=64, tmax=64)
        yb = gpu.buffer(t * f * 4)
        run(spec, {"w0": gb, "x": gpu.upload(x), "y": yb}, t, mode)
        y = read(gpu, yb, (t, f))
        assert rel_err(y[:3], xq[64:] @ wg_.T) < 1e-4 and not y[3:].any()


def test_mma_matmul_epilogues(gpu):
    check_epilogues(gpu, ("q4_0", "q8_0"), _modes(gpu), lambda spec, b, t, e: _run(gpu, spec, b, t, e), int8_rounded)


def test_mma_matmul_qkv_epilogue(gpu):
    """Bias, RoPE on adjacent pairs and the KV-cache write, as the prompt's QKV runs them."""
    t, pos0 = 69, 5
    spec, check = qkv_case(gpu, "q8_0", 32, 80, 128, t, pos0, seed=13, x_seen=int8_rounded)
    for emulate in _modes(gpu):
        check(lambda b, emulate=emulate: _run(gpu, spec, b, t, emulate, pos=pos0), t, 1e-4)


def test_mma_eligibility():
    """Formats with one scale a unit and a plain input; the adapter's configuration list."""
    assert mma_ok(LinearSpec(k=64, segments=(Segment("q4_k", 8), Segment("q8_0", 8))))
    assert not mma_ok(LinearSpec(k=256, segments=(Segment("q6_k", 8),)))
    assert not mma_ok(LinearSpec(k=256, segments=(Segment("q2_k", 8),)))  # two minimums a unit
    assert mma_ok(LinearSpec(k=256, segments=(Segment("q3_k", 8), Segment("iq4_xs", 8), Segment("iq4_nl", 8))))
    assert not mma_ok(LinearSpec(k=64, segments=(Segment("f16", 8),)))
    assert not mma_ok(LinearSpec(k=64, segments=(Segment("q8_0", 8),), prologue="rmsnorm"))
    cfg = {"component_type": "i8", "result_component_type": "i32", "m": 16, "n": 16, "k": 32,
           "min_subgroup_size": 32, "max_subgroup_size": 32}
    assert has_int8_mma([cfg]) and not has_int8_mma([{**cfg, "n": 8}]) and not has_int8_mma([])
