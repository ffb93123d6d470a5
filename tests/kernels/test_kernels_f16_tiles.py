"""The f16-tile prompt matmul (kernels/mma.py) against numpy: its logic everywhere (the tile
products as f32 dot products of the same staged f16s, `emulate`), the matrix units where the
adapter has them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from kernel_harness import f16_rounded, f16_tile_modes, read, rel_err, run_kernel, tint_check
from test_kernels_linear import _weight, qkv_case
from test_kernels_mma import check_epilogues

from reference import silu
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.kernels.linear import LinearSpec, Segment, epilogue_grid, epilogue_kernel
from webgpu_llm.kernels.mma import (
    TileShape,
    f16_matmul_grid,
    f16_matmul_kernel,
    f16_ok,
    has_f16_mma,
)

_modes = f16_tile_modes
h = f16_rounded


def _run(gpu, spec, bufs, t, emulate, shape=None, **state):
    shape = shape or TileShape()
    run_kernel(gpu, f16_matmul_kernel(spec, shape, emulate), bufs, f16_matmul_grid(spec, shape)(t), n=t, **state)
    if emulate:
        tint_check(f16_matmul_kernel(spec, shape, False))


FMTS = ["f16", "bf16", "q4_0", "q8_0", "q6_k", "q2_k", "iq4_xs", "q5_1"]


@pytest.mark.parametrize("fmt", FMTS)
def test_f16_matmul_formats(gpu, fmt):
    """Float weights as they are, the quantized ones dequantized while staging: 70 tokens and
    75 rows cross the 64 x 64 workgroup tile (a ragged last pair too); float rows of 72 end
    within a unit. Loads two steps ahead (depth 2): q4_0, q8_0 and bf16 keep a unit's words
    until it is staged (split loads), the others its values."""
    rng = np.random.default_rng(21)
    k = {256: 512, 32: 160}.get(FORMATS[fmt].block, 72)
    rows, t = 75, 70
    w, wb = _weight(gpu, fmt, rows, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment(fmt, rows),))
    # (two formats also through the loaders of a double-buffered workgroup of 2 units a step)
    shapes = [None, *([TileShape(2, 2, 1, 1, double=True, ku=2), TileShape(1, 4, 1, 2, straight=True),
                       TileShape(1, 4, 1, 2, depth=2), TileShape(2, 2, 1, 1, ku=2, depth=2)]
                      if fmt in ("q4_0", "q8_0", "bf16") else [TileShape(1, 4, 1, 2, depth=2)])]
    for emulate in _modes(gpu):
        for shape in shapes:
            yb = gpu.buffer(rows * t * 4)
            _run(gpu, spec, {"w0": wb, "x": gpu.upload(x), "y": yb}, t, emulate, shape)
            y = read(gpu, yb, (t, rows))
            assert rel_err(y, h(x) @ h(w).T) < 1e-5, (emulate, shape)
            assert rel_err(y, x @ w.T) < 3e-3, (emulate, shape)


@pytest.mark.parametrize("shape", [TileShape(1, 1, 1, 1), TileShape(1, 1, 1, 1, tokens_first=True), TileShape(2, 2, 2, 2),
                                   TileShape(2, 1, 2, 4), TileShape(4, 2, 2, 2), TileShape(2, 2, 2, 2, double=True),
                                   TileShape(1, 1, 1, 1, tokens_first=True, double=True), TileShape(2, 2, 2, 2, ku=2),
                                   TileShape(1, 1, 1, 1, double=True, ku=4), TileShape(1, 4, 1, 2, straight=True),
                                   TileShape(2, 2, 2, 2, ku=2, straight=True), TileShape(1, 2, 1, 1, straight=True),
                                   TileShape(1, 4, 1, 2, depth=2), TileShape(2, 2, 2, 2, ku=2, depth=2),
                                   TileShape(1, 1, 1, 1, double=True, depth=2), TileShape(1, 2, 1, 1, depth=2),
                                   TileShape(4, 2, 2, 4, depth=2), TileShape(2, 4, 4, 2, depth=2),
                                   TileShape(4, 2, 2, 4, depth=2, spread=True), TileShape(2, 2, 2, 2, spread=True),
                                   TileShape(2, 1, 2, 1, spread=True), TileShape(2, 2, 1, 1, ku=2, double=True, spread=True),
                                   TileShape(2, 2, 2, 2, ku=2, depth=2, spread=True),
                                   TileShape(4, 2, 2, 4, depth=2, spread=True, bitcast=True),
                                   TileShape(2, 2, 2, 2, depth=2, straight=True, double=True)])
def test_f16_matmul_shapes(gpu, shape):
    """Workgroups of other subgroup and tile counts, in the tokens-first order, with
    double-buffered staging, 2 or 4 units a step (K of 3 units: the last step partial), the
    next loads without a branch (the last step reloading its own unit; threads past the
    tile's rows too), loads two steps ahead, and each weight row staged by 2 or 4 threads
    (`spread`): 50 tokens, 101 rows."""
    rng = np.random.default_rng(22)
    k, rows, t = 96, 101, 50
    w, wb = _weight(gpu, "f16", rows, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment("f16", rows),))
    parts = shape.wg // shape.bn
    assert (f"_w{parts}" in f16_matmul_kernel(spec, shape).name) == shape.spread
    for emulate in _modes(gpu):
        yb = gpu.buffer(rows * t * 4)
        _run(gpu, spec, {"w0": wb, "x": gpu.upload(x), "y": yb}, t, emulate, shape)
        assert rel_err(read(gpu, yb, (t, rows)), h(x) @ w.T) < 1e-5, (shape, emulate)


@pytest.mark.parametrize("fmt,shape", [("f16", TileShape(2, 2, 4, 4, depth=2)), ("f16", TileShape(1, 4, 1, 2)),
                                       ("q4_0", TileShape(2, 2, 2, 2, depth=2)), ("f16", TileShape(2, 2, 2, 2, ku=2)),
                                       ("bf16", TileShape(1, 1, 1, 1, double=True, depth=2)),
                                       ("f16", TileShape(4, 2, 2, 4, depth=2, spread=True)),
                                       ("f16", TileShape(2, 2, 2, 2, depth=2, bitcast=True))])
def test_f16_matmul_reads_f16_rows_of_x(gpu, fmt, shape):
    """x as rows of f16s (LinearSpec.x_f16): the same products as from the f32 rows rounded to
    f16, K of 3 units and 8 inputs (ragged), in workgroups whose threads stage whole, partial
    (16 tokens: fewer words than threads) or several units' words, split K, and with an epilogue."""
    rng = np.random.default_rng(23)
    k, rows, t = 104 if fmt != "q4_0" else 128, 77, 45
    w, wb = _weight(gpu, fmt, rows, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    xb = gpu.upload(x.astype(np.float16))
    for spec in (LinearSpec(k=k, segments=(Segment(fmt, rows),), x_f16=True),
                 LinearSpec(k=k, segments=(Segment(fmt, rows),), x_f16=True, epilogue="partial", splits=2)):
        for emulate in _modes(gpu):
            yb = gpu.buffer(rows * t * 4 * spec.splits)
            _run(gpu, spec, {"w0": wb, "x": xb, "y": yb}, t, emulate, shape)
            y = read(gpu, yb, (t, spec.splits, rows)).sum(1)
            assert rel_err(y, h(x) @ h(w).T) < 1e-5, (emulate, spec.splits)
    with pytest.raises(ValueError, match="multiple of 8"):
        f16_matmul_kernel(LinearSpec(k=100, segments=(Segment("f16", 8),), x_f16=True))


@pytest.mark.parametrize("shape", [TileShape(2, 2, 2, 2, acc16=True), TileShape(4, 2, 2, 4, depth=2, acc16=True),
                                   TileShape(4, 2, 4, 8, depth=2, acc16=True)])
def test_f16_matmul_with_f16_sums(gpu, shape):
    """TileShape.acc16: the sums as f16s (rounded at every step), from f16 rows of x, with
    split K and an epilogue: within f16 rounding of the f32 sums over K of 5 units, and not
    the f32 sums themselves (the kernel named for it). 4x2x4x8 (256 x 256, gate/up's candidate)
    needs 44 KB of workgroup memory: a GPU's 48 KB, not llvmpipe's 32."""
    if shape.shared_bytes > gpu.limits["max-compute-workgroup-storage-size"]:
        pytest.skip(f"{shape.label} takes {shape.shared_bytes} bytes of workgroup memory, over this device's")
    rng = np.random.default_rng(26)
    k, rows, t = 160, 77, 45
    w, wb = _weight(gpu, "f16", rows, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    xb = gpu.upload(x.astype(np.float16))
    assert f16_matmul_kernel(LinearSpec(k=k, segments=(Segment("f16", rows),)), shape).name.endswith("_a16")
    for spec in (LinearSpec(k=k, segments=(Segment("f16", rows),), x_f16=True),
                 LinearSpec(k=k, segments=(Segment("f16", rows),), x_f16=True, epilogue="partial", splits=2)):
        for emulate in _modes(gpu):
            if not emulate and not has_f16_mma(gpu.subgroup_matrix_configs, sums="f16"):
                continue
            yb = gpu.buffer(rows * t * 4 * spec.splits)
            _run(gpu, spec, {"w0": wb, "x": xb, "y": yb}, t, emulate, shape)
            y = read(gpu, yb, (t, spec.splits, rows)).sum(1)
            assert 1e-5 < rel_err(y, h(x) @ h(w).T) < 3e-3, (emulate, spec.splits)


@pytest.mark.parametrize("epilogue", ["silu_mul", "gelu_mul", "swiglu_oai"])
def test_f16_matmul_gated_outputs_as_f16(gpu, epilogue):
    """y_f16: a gated epilogue's outputs stored as f16s, the f32 outputs rounded (and clamped
    past f16's range); other epilogues refuse it."""
    rng = np.random.default_rng(25)
    k, f, t = 96, 37, 21
    _, wb = _weight(gpu, "f16", 2 * f, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    x[:, 0] = 3000.0  # gate times up past f16's range (not gpt-oss's, whose gate and up are clamped)
    spec = LinearSpec(k=k, segments=(Segment("f16", f), Segment("f16", f)), epilogue=epilogue)
    for emulate in _modes(gpu):
        y32, y16 = gpu.buffer(f * t * 4), gpu.buffer(f * t * 2)
        _run(gpu, spec, {"w0": wb, "w1": wb, "x": gpu.upload(x), "y": y32}, t, emulate)
        _run(gpu, replace(spec, y_f16=True), {"w0": wb, "w1": wb, "x": gpu.upload(x), "y": y16}, t, emulate)
        want = np.clip(read(gpu, y32, (t, f)), -65504, 65504).astype(np.float16)
        assert (np.abs(want) == 65504).any() == (epilogue != "swiglu_oai")
        assert (read(gpu, y16, (t, f), np.float16) == want).all(), emulate
    with pytest.raises(ValueError, match="gated"):
        f16_matmul_kernel(LinearSpec(k=k, segments=(Segment("f16", f),), y_f16=True))


@pytest.mark.parametrize(("epilogue", "f"), [("silu_mul", 75), ("store", 77)])
def test_f16_matmul_in_a_whole_part_and_a_split_tail(gpu, epilogue, f):
    """The output pairs before pair0 in one dispatch (npairs of them, its epilogue applied),
    the rest split over K in another (gated pairs kept: a gated pair's rows p and f + p), and
    the epilogue on the tail's sums alone: the whole matmul's outputs, the first part's not
    touched by the tail's epilogue. Odd sizes: a ragged last pair for store, K of 5 units
    split 3 ways."""
    rng = np.random.default_rng(27)
    k, t, shape = 160, 45, TileShape()  # 32 pairs a workgroup
    gated = epilogue == "silu_mul"
    segs = (Segment("f16", f), Segment("f16", f)) if gated else (Segment("f16", f),)
    rows = f * len(segs)
    parts = [_weight(gpu, "f16", f, k, rng) for _ in segs]  # gate and up: a buffer each
    w = np.concatenate([p[0] for p in parts])
    x = rng.standard_normal((t, k)).astype(np.float32)
    spec = LinearSpec(k=k, segments=segs, epilogue=epilogue)
    sums = h(x) @ h(w).T
    want = silu(sums[:, :f]) * sums[:, f:] if gated else sums
    p0 = 64 if gated else 32  # whole workgroups' pairs: the first 64 outputs
    main = replace(spec, npairs=p0)
    tail = replace(spec, epilogue="partial", splits=3, gated_pairs=gated, pair0=p0)
    binds = {f"w{i}": p[1] for i, p in enumerate(parts)}
    for emulate in _modes(gpu):
        yb, part = gpu.upload(np.full((t, f), 7.0, np.float32)), gpu.buffer(t * 3 * rows * 4)
        _run(gpu, main, {**binds, "x": gpu.upload(x), "y": yb}, t, emulate, shape)
        got = read(gpu, yb, (t, f))
        assert rel_err(got[:, :64], want[:, :64]) < 1e-5 and (got[:, 64:] == 7.0).all()
        _run(gpu, tail, {**binds, "x": gpu.upload(x), "y": part}, t, emulate, shape)
        fin = replace(spec, pair0=p0)
        run_kernel(gpu, epilogue_kernel(fin, 3, "part"), {"part": part, "y": yb}, epilogue_grid(fin)(t), n=t)
        assert rel_err(read(gpu, yb, (t, f)), want) < 1e-5, emulate


def test_f16_matmul_epilogues(gpu):
    check_epilogues(gpu, ("f16", "bf16"), _modes(gpu), lambda spec, b, t, e: _run(gpu, spec, b, t, e), h)


def test_f16_matmul_qkv_epilogue(gpu):
    """Bias, RoPE on adjacent pairs and the KV-cache write, as the prompt's QKV runs them."""
    t, pos0 = 69, 5
    spec, check = qkv_case(gpu, "f16", 32, 80, 128, t, pos0, seed=24, x_seen=h)
    for emulate in _modes(gpu):
        check(lambda b, emulate=emulate: _run(gpu, spec, b, t, emulate, pos=pos0), t, 1e-5)


def test_loads_two_steps_ahead_keep_words_for_the_split_formats():
    """TileShape.depth 2: q4_0 and q8_0 units (of one or several segments) travel as their
    words and are dequantized when staged (dec_row); formats without split loads load values."""
    for fmt, split in (("q4_0", True), ("q8_0", True), ("bf16", True), ("q6_k", False)):
        k = 256 if fmt == "q6_k" else 96
        spec = LinearSpec(k=k, segments=(Segment(fmt, 40), Segment(fmt, 24)))
        wgsl = f16_matmul_kernel(spec, TileShape(1, 4, 1, 2, depth=2)).wgsl
        assert ("dec_row(r, w" in wgsl and "w1 = raw_row(r" in wgsl) == split, fmt
        assert ("w1 = load_row(r" in wgsl) != split, fmt


def test_f16_eligibility():
    """Float weights by default, every format but f32 where asked; the adapter's configurations."""
    assert f16_ok(LinearSpec(k=64, segments=(Segment("f16", 8), Segment("bf16", 8))))
    assert not f16_ok(LinearSpec(k=64, segments=(Segment("q8_0", 8),)))
    assert f16_ok(LinearSpec(k=64, segments=(Segment("q8_0", 8),)), every_format=True)
    assert not f16_ok(LinearSpec(k=64, segments=(Segment("f32", 8),)), every_format=True)
    assert not f16_ok(LinearSpec(k=64, segments=(Segment("f16", 8),), prologue="rmsnorm"))
    cfg = {"component_type": "f16", "result_component_type": "f32", "m": 16, "n": 16, "k": 16,
           "min_subgroup_size": 32, "max_subgroup_size": 32}
    assert has_f16_mma([cfg]) and not has_f16_mma([{**cfg, "result_component_type": "f16"}]) and not has_f16_mma([])
    with pytest.raises(ValueError):
        TileShape(1, 1, 1, 4).check()  # 64 weight rows for 32 threads
