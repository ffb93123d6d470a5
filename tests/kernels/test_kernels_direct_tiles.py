"""The direct f16 tiles (kernels/direct_tiles.py: weight fragments loaded from the weight buffer
itself) against numpy: their logic everywhere (emulated: f32 dot products of the same f16s), the
matrix units where the adapter has them, and the real-tile WGSL through Tint."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from kernel_harness import f16_rounded, f16_tile_modes, read, rel_err, run_kernel, tint_check
from test_kernels_linear import _weight, qkv_case

from reference import silu
from webgpu_llm.kernels.direct_tiles import DirectShape, direct_matmul_grid, direct_matmul_kernel, direct_ok
from webgpu_llm.kernels.linear import LinearSpec, Segment

h = f16_rounded
SHAPES = [DirectShape(), DirectShape(1, 1, 1, 1, kc=16, ahead=1), DirectShape(2, 2, 2, 2, kc=64, ahead=2),
          DirectShape(1, 4, 2, 3, kc=96), DirectShape(4, 1, 1, 2, kc=128, ahead=8, tokens_first=True)]


def _run(gpu, spec, bufs, t, emulate, shape, **state):
    run_kernel(gpu, direct_matmul_kernel(spec, shape, emulate), bufs, direct_matmul_grid(spec, shape)(t), n=t, **state)
    if emulate:
        tint_check(direct_matmul_kernel(spec, shape, False))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.label.replace(" ", "-"))
def test_direct_matmul_against_numpy(gpu, shape):
    """Three segments of 48, 16 and 32 rows (a fragment never straddles two; a workgroup's last
    fragments past the rows clamped and dropped), 37 tokens (a ragged token block), K of 7
    units (chunks that do not divide it: zeros past the split's inputs), whole and split 3
    ways over K, from f32 and from f16 rows of x."""
    rng = np.random.default_rng(41)
    k, t = 224, 37
    segs = [_weight(gpu, "f16", r, k, rng) for r in (48, 16, 32)]
    w = np.concatenate([s[0] for s in segs])
    x = rng.standard_normal((t, k)).astype(np.float32)
    spec = LinearSpec(k=k, segments=tuple(Segment("f16", r) for r in (48, 16, 32)))
    binds = {f"w{i}": s[1] for i, s in enumerate(segs)}
    for emulate in f16_tile_modes(gpu):
        for sp, xb in ((spec, gpu.upload(x)), (replace(spec, epilogue="partial", splits=3), gpu.upload(x)),
                       (replace(spec, x_f16=True), gpu.upload(x.astype(np.float16)))):
            yb = gpu.buffer(w.shape[0] * t * 4 * sp.splits)
            _run(gpu, sp, {**binds, "x": xb, "y": yb}, t, emulate, shape)
            y = read(gpu, yb, (t, sp.splits, w.shape[0]))
            assert rel_err(y.sum(1), h(x) @ h(w).T) < 1e-5, (emulate, sp.splits, sp.x_f16)
            if sp.splits == 3:  # units 0-2, 3-5, 6: each split its own inputs
                assert rel_err(y[:, 2], h(x)[:, 192:] @ h(w)[:, 192:].T) < 1e-5


@pytest.mark.parametrize("shape", [DirectShape(2, 2, 2, 1), DirectShape(1, 1, 2, 2, kc=32)], ids=lambda s: s.label.replace(" ", "-"))
def test_direct_matmul_gated_and_added(gpu, shape):
    """SiLU·mul over gate and up (a pair's rows p and f + p: each half of a workgroup's tile
    rows from its own buffer), its partial sums split over K (gated pairs), and the residual
    add, over a token window (t0, tmax)."""
    rng = np.random.default_rng(42)
    k, f, t = 160, 80, 45
    (wg_, gb), (wu, ub) = _weight(gpu, "f16", f, k, rng), _weight(gpu, "f16", f, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    res = rng.standard_normal((t, f)).astype(np.float32)
    xq = h(x)
    for emulate in f16_tile_modes(gpu):
        spec = LinearSpec(k=k, segments=(Segment("f16", f), Segment("f16", f)), epilogue="silu_mul")
        yb = gpu.buffer(f * t * 4)
        _run(gpu, spec, {"w0": gb, "w1": ub, "x": gpu.upload(x), "y": yb}, t, emulate, shape)
        assert rel_err(read(gpu, yb, (t, f)), silu(xq @ h(wg_).T) * (xq @ h(wu).T)) < 1e-4, emulate
        part = replace(spec, epilogue="partial", splits=2, gated_pairs=True)
        yb = gpu.buffer(t * 2 * 2 * f * 4)
        _run(gpu, part, {"w0": gb, "w1": ub, "x": gpu.upload(x), "y": yb}, t, emulate, shape)
        sums = read(gpu, yb, (t, 2, 2 * f)).sum(1)
        assert rel_err(sums, xq @ h(np.concatenate([wg_, wu])).T) < 1e-5, emulate
        spec = LinearSpec(k=k, segments=(Segment("f16", f),), epilogue="add", t0=16, tmax=20)
        yb = gpu.upload(res)
        _run(gpu, spec, {"w0": gb, "x": gpu.upload(x), "y": yb}, t, emulate, shape)
        y = read(gpu, yb, (t, f))
        assert rel_err(y[:20], res[:20] + xq[16:36] @ h(wg_).T) < 1e-5 and (y[20:] == res[20:]).all(), emulate


def test_direct_matmul_qkv_epilogue(gpu):
    """Bias, RoPE on adjacent pairs and the KV-cache write, as a batched step's QKV runs them."""
    t, pos0 = 21, 5
    spec, check = qkv_case(gpu, "f16", 32, 64, 128, t, pos0, seed=43, x_seen=h)
    for emulate in f16_tile_modes(gpu):
        check(lambda b, emulate=emulate: _run(gpu, spec, b, t, emulate, DirectShape(), pos=pos0), t, 1e-5)


def test_direct_eligibility():
    """f16 weights in segments of whole fragments, plain token rows; a clear refusal otherwise."""
    ok = LinearSpec(k=64, segments=(Segment("f16", 32), Segment("f16", 16)))
    assert direct_ok(ok) == ""
    assert "f16 weights" in direct_ok(LinearSpec(k=64, segments=(Segment("q4_0", 32),)))
    assert "multiple of 16 rows" in direct_ok(LinearSpec(k=64, segments=(Segment("f16", 40),)))
    assert "inputs" in direct_ok(LinearSpec(k=72, segments=(Segment("f16", 32),)))
    gated = LinearSpec(k=64, segments=(Segment("f16", 48), Segment("f16", 48)), epilogue="silu_mul")
    assert direct_ok(gated) == "" and "whole fragments" in direct_ok(gated, DirectShape(tn=1, sn=1))
    with pytest.raises(ValueError, match="direct f16 tiles need f16 weights"):
        direct_matmul_kernel(LinearSpec(k=64, segments=(Segment("q8_0", 32),)))
    assert DirectShape(kc=256, sk=2).chunk(1120) == 224 and DirectShape(kc=256).chunk(96) == 96


def test_direct_shape_fits_workgroup_memory():
    """The x chunk is halved (in whole steps of the K slices) until the workgroup fits the
    device's workgroup memory; a shape whose sums alone are past it does not fit."""
    spec = LinearSpec(k=4864, segments=(Segment("f16", 896),), epilogue="partial", splits=2)
    big = DirectShape(2, 2, 2, 2, kc=2048)
    fit = big.fit(spec, 32768)
    assert fit is not None and fit.shared_bytes(2432) <= 32768 < replace(fit, kc=2 * fit.kc).shared_bytes(2432)
    assert fit.kc % 32 == 0 and big.fit(spec, 1 << 20) == big
    assert DirectShape(8, 4, 4, 4).fit(spec, 32768) is None


@pytest.mark.parametrize("fmt", ["q4_0", "q6_k", "bf16", "iq4_xs"])
def test_f16_copy_of_weights(gpu, fmt):
    """A quantized (or bf16) matrix's rows as f16 weights in FORMATS["f16"]'s layout: the
    dequantized values rounded to f16, whole and from a middle row on (a copy cut in parts)."""
    from webgpu_llm.kernels.direct_tiles import f16_copy_grid, f16_copy_kernel
    from webgpu_llm.kernels.formats import FORMATS

    rng = np.random.default_rng(44)
    rows, k = 37, 256 if FORMATS[fmt].block == 256 else 96
    w, wb = _weight(gpu, fmt, rows, k, rng)
    for first, count in ((0, rows), (16, 13)):
        yb = gpu.buffer(FORMATS["f16"].nbytes(count, k))
        run_kernel(gpu, f16_copy_kernel(fmt, rows, k, first, count), {"w0": wb, "y": yb}, f16_copy_grid(count, k))
        got = read(gpu, yb, (count, FORMATS["f16"].padded_k(k)), np.float16)[:, :k]
        want = w[first:first + count].astype(np.float16)  # (WGSL may round to either neighbour)
        assert (np.abs(got.astype(np.float32) - want) <= np.spacing(np.abs(want))).all(), first
