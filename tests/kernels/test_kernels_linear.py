"""The linear kernels (mat-vec and matmul) against numpy, for every weight format and epilogue,
on random inputs whose sizes are not multiples of the workgroup or block sizes."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_harness import f16_rounded, read, rel_err, run_kernel

from reference import dequantize, int8_rounded, rms_norm, rope_pairs, silu
from webgpu_llm.kernels.formats import FORMATS, INT8_FORMATS
from webgpu_llm.kernels.linear import (
    AttnShape,
    LinearSpec,
    QkvShape,
    Segment,
    epilogue_grid,
    epilogue_kernel,
    half_ok,
    matmul_grid,
    matmul_kernel,
    matvec_grid,
    matvec_kernel,
)
from webgpu_llm.models.presets import random_weight
from webgpu_llm.runtime.program import Kernel

ALL = list(FORMATS)


def _weight(gpu, fmt, rows, k, rng):
    raw = random_weight(fmt, rows, k, rng)
    return dequantize(fmt, raw, k), gpu.upload(FORMATS[fmt].pack(raw, k))


def _k(fmt: str) -> int:
    # K-quants need multiples of 256, the 32-blocks multiples of 32; floats take a ragged 72
    return {256: 512, 32: 96}.get(FORMATS[fmt].block, 72)


def _ks(fmt: str) -> tuple[int, ...]:
    """Row lengths to test a format at: `_k`, and for the block formats one more (a single
    super-block of 256, or an odd number of 32-blocks)."""
    return (_k(fmt), *{256: (256,), 32: (224,)}.get(FORMATS[fmt].block, ()))


def _check_shapes(gpu, spec, w, wb, x, mv_shapes, tms) -> None:
    """The mat-vec at each (workgroup, threads per row pair, units in flight) on x[0], and the
    matmul at each tokens-per-thread on all of x, against w."""
    t, rows = x.shape[0], spec.rows
    xb, yb = gpu.upload(x), gpu.buffer(rows * t * 4)
    for wg, tpr, ilp in mv_shapes:
        run_kernel(gpu, matvec_kernel(spec, wg=wg, tpr=tpr, ilp=ilp), {"w0": wb, "x": xb, "y": yb},
                   matvec_grid(spec, wg, tpr))
        assert rel_err(read(gpu, yb, rows), w @ x[0]) < 1e-5, (wg, tpr, ilp)
    for tm in tms:
        for prefetch in (True, False):
            run_kernel(gpu, matmul_kernel(spec, tm, prefetch), {"w0": wb, "x": xb, "y": yb},
                       matmul_grid(spec, tm)(t), n=t)
            assert rel_err(read(gpu, yb, (t, rows)), x @ w.T) < 1e-5, (tm, prefetch)


@pytest.mark.parametrize("fmt,k", [(f, k) for f in ALL for k in _ks(f)])
def test_matvec_and_matmul_every_format(gpu, fmt, k):
    rng = np.random.default_rng(1)
    rows, t = 37, 5
    w, wb = _weight(gpu, fmt, rows, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment(fmt, rows),))
    _check_shapes(gpu, spec, w, wb, x, ((128, 32, 1), (64, 1, 1), (64, 2, 2)), (4,))


def test_tile_shapes(gpu):
    """Mat-vec units in flight (a unit past a row's end is clamped and meets a zero x) and
    matmul tokens per thread (37 tokens cross tile edges of every size)."""
    rng = np.random.default_rng(5)
    fmt, k, rows, t = "q5_k", 768, 69, 37
    w, wb = _weight(gpu, fmt, rows, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment(fmt, rows),))
    _check_shapes(gpu, spec, w, wb, x, ((64, 2, 2), (64, 1, 4), (128, 8, 3)), (2, 8))  # tm 4: above


def test_matmul_split_k_partials(gpu):
    """K split over grid z: each split's sums land in its own row of the partial buffer
    (3 splits of 5 units: the last split is short)."""
    rng = np.random.default_rng(7)
    fmt, k, rows, t, splits = "q8_0", 160, 69, 37, 3
    w, wb = _weight(gpu, fmt, rows, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment(fmt, rows),), epilogue="partial", splits=splits)
    yb = gpu.buffer(t * splits * rows * 4)
    run_kernel(gpu, matmul_kernel(spec), {"w0": wb, "x": gpu.upload(x), "y": yb}, matmul_grid(spec)(t), n=t)
    part = read(gpu, yb, (t, splits, rows))
    assert rel_err(part.sum(1), x @ w.T) < 1e-5
    assert rel_err(part[:, 2], x[:, 128:] @ w[:, 128:].T) < 1e-5  # units 4..4 of 0..4


@pytest.mark.parametrize("fmt,k", [(f, k) for f in INT8_FORMATS for k in (512, 768 if FORMATS[f].block == 256 else 160)])
def test_matvec_int8_every_format(gpu, fmt, k):
    """Each format with an int8 path (INT8_FORMATS) against numpy on the int8-rounded input:
    offsets (q4_0, q5_0, q6_k), minimums (q4_1, q5_1, q4_k, q5_k) through the activation sum,
    5th and 6th bits, two scales per unit (q6_k, q3_k's signed 3-bit values) and two minimums
    (q2_k), the iq4 table's int8s."""
    rng = np.random.default_rng(8)
    f = 37
    w, wb = _weight(gpu, fmt, f, k, rng)
    x = rng.standard_normal(k).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment(fmt, f),))
    yb = gpu.buffer(f * 4)
    kernel = matvec_kernel(spec, wg=64, tpr=4, shared_bytes=16384, int8=True, int8_direct=True)
    run_kernel(gpu, kernel, {"w0": wb, "x": gpu.upload(x), "y": yb}, matvec_grid(spec, 64, 4))
    y = read(gpu, yb, f)
    assert rel_err(y, w @ int8_rounded(x)) < 1e-4
    assert rel_err(y, w @ x) < 3e-2


def test_iq4_polynomial_is_the_table():
    """The IQ4 loaders' polynomial rounds to the gguf package's table at every index, with room
    for float rounding (evaluated in f32, as the kernels do, fused or not)."""
    from gguf.quants import IQ4_NL

    from webgpu_llm.kernels.formats import _IQ4_POLY, IQ4_VALUES

    assert IQ4_VALUES == tuple(IQ4_NL.kvalues)
    n = np.arange(16, dtype=np.float32)
    c = [np.float32(v) for v in _IQ4_POLY]
    acc32, acc64 = c[0] * n, np.float64(c[0]) * n
    for ci in c[1:]:
        acc32, acc64 = (acc32 + ci) * n, (acc64 + np.float64(ci)) * n
    for p in (acc32.astype(np.float64) - 127, acc64 - 127):
        assert np.abs(p - np.array(IQ4_VALUES)).max() < 0.45


def test_int8_room_for_wide_inputs():
    """Quantizing a plain x straight from memory leaves room for the 1.5B's down (k = 8960)."""
    from webgpu_llm.kernels.linear import int8_ok

    down = LinearSpec(k=8960, segments=(Segment("q8_0", 1536),), epilogue="add")
    assert not int8_ok(down, 256, 49152) and int8_ok(down, 256, 49152, direct=True)
    normed = LinearSpec(k=8960, segments=(Segment("q8_0", 1536),), prologue="rmsnorm")
    assert not int8_ok(normed, 256, 49152, direct=True)  # a normalised x is staged regardless


@pytest.mark.parametrize("prologue", ["plain", "rmsnorm", "plain_q8"])
def test_matvec_int8_activations(gpu, prologue):
    """dot4I8Packed path: q4_0 gate and q8_0 up segments (SiLU·mul), a q4_0 matrix with a
    fused RMSNorm or a plain q8_0 one, against numpy on the int8-rounded input (and loosely on
    the exact one); the one-format matrices also with their first units' words requested
    before x is quantized (`early`; two formats of other word counts ignore it)."""
    rng = np.random.default_rng(6)
    k, f = 160, 45
    wq4, bq4 = _weight(gpu, "q4_0", f, k, rng)
    wq8, bq8 = _weight(gpu, "q8_0", f, k, rng)
    x = rng.standard_normal((2, k)).astype(np.float32)
    x[0, :32] = 0.0  # an all-zero unit: scale 0
    if prologue == "plain":
        spec = LinearSpec(k=k, segments=(Segment("q4_0", f), Segment("q8_0", f)), epilogue="silu_mul")
        binds, n, xin = {"w0": bq4, "w1": bq8}, 1, x[0]
        ref = lambda v: silu(wq4 @ v) * (wq8 @ v)  # noqa: E731
    elif prologue == "plain_q8":
        spec = LinearSpec(k=k, segments=(Segment("q8_0", f),))
        binds, n, xin = {"w0": bq8}, 1, x[0]
        ref = lambda v: wq8 @ v  # noqa: E731
    else:
        nw = rng.standard_normal(k).astype(np.float32)
        spec = LinearSpec(k=k, segments=(Segment("q4_0", f),), prologue="rmsnorm", eps=1e-5, last_row=True)
        binds, n, xin = {"w0": bq4, "pv": gpu.upload(nw)}, 2, x[1] * nw
        rms = 1.0 / np.sqrt(np.mean(x[1] ** 2) + 1e-5)
        ref = lambda v: (wq4 @ v) * rms  # noqa: E731
    # one quantized input serving several row blocks; a plain x quantized straight from memory;
    # 2 and 3 units' loads at once (5 units: a thread's last ones past the row's end); x staged
    # with all of a thread's words' loads at once (16 threads: 3 words each, the last past the row)
    for blocks, direct, ilp, early, wg, at_once in (
            (1, False, 1, 0, 64, False), (3, False, 1, 0, 64, False), (1, True, 1, 0, 64, False),
            (3, True, 1, 0, 64, False), (1, True, 2, 0, 64, False), (3, False, 3, 0, 64, False),
            (1, False, 1, 1, 64, False), (1, True, 1, 2, 64, False), (1, False, 1, 0, 16, True),
            (3, False, 1, 0, 16, True), (1, False, 1, 0, 64, True)):
        yb = gpu.buffer(f * 4)
        kernel = matvec_kernel(spec, wg=wg, tpr=4, shared_bytes=16384, int8=True, blocks=blocks, int8_direct=direct,
                               ilp=ilp, early=early, at_once=at_once)
        assert ("dotw_row(" in kernel.wgsl) == (early > 0 and prologue != "plain"), early
        assert ("xs[i] = " in kernel.wgsl) == (prologue == "rmsnorm" or not direct)  # staged or not
        assert ("let v2 = " in kernel.wgsl) == (at_once and wg == 16)
        run_kernel(gpu, kernel, {**binds, "x": gpu.upload(x), "y": yb}, matvec_grid(spec, wg, 4, blocks), n=n)
        y = read(gpu, yb, f)
        assert rel_err(y, ref(int8_rounded(xin))) < 1e-4, (blocks, direct, ilp, early, wg, at_once)
        assert rel_err(y, ref(xin)) < 3e-2


def test_segments_of_mixed_formats_and_split_pairs(gpu):
    """Gate/up as two segments of different formats, SiLU·mul pairing row p with row F + p."""
    rng = np.random.default_rng(2)
    k, f, t = 256, 45, 3
    wg_, gb = _weight(gpu, "q4_k", f, k, rng)
    wu, ub = _weight(gpu, "q8_0", f, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    xb, yb = gpu.upload(x), gpu.buffer(f * t * 4)
    spec = LinearSpec(k=k, segments=(Segment("q4_k", f), Segment("q8_0", f)), epilogue="silu_mul")
    ref = silu(x @ wg_.T) * (x @ wu.T)
    run_kernel(gpu, matvec_kernel(spec), {"w0": gb, "w1": ub, "x": xb, "y": yb}, matvec_grid(spec))
    assert rel_err(read(gpu, yb, f), ref[0]) < 1e-5
    run_kernel(gpu, matmul_kernel(spec), {"w0": gb, "w1": ub, "x": xb, "y": yb}, matmul_grid(spec)(t), n=t)
    assert rel_err(read(gpu, yb, (t, f)), ref) < 1e-5


@pytest.mark.parametrize("fmt", ["f16", "bf16", "f32", "q8_0"])
def test_matvec_spread_units(gpu, fmt):
    """Float weights read with a row group's threads on adjacent words (`spread`): the last
    block of units shorter than the row group (k = 200: 7 units of 32 for 4 or 8 threads),
    plain and RMSNorm inputs (staged or read where used), several units in flight; q8_0
    ignores the switch."""
    rng = np.random.default_rng(11)
    k, rows = (200 if fmt != "q8_0" else 224), 45
    w, wb = _weight(gpu, fmt, rows, k, rng)
    x = rng.standard_normal(k).astype(np.float32)
    nw = rng.standard_normal(k).astype(np.float32)
    xb, pvb, yb = gpu.upload(x), gpu.upload(nw), gpu.buffer(rows * 4)
    sgs = gpu.subgroups_wgsl(on_cpu=True)
    inputs = (("plain", 0), ("rmsnorm", 32768), ("rmsnorm", 0))
    shapes = ((4, 1, None), (8, 2, sgs), (1, 1, None), (16, 1, None))
    if fmt != "f16":  # fewer cases (each kernel takes seconds to build on llvmpipe)
        inputs, shapes = inputs[:1 if fmt == "q8_0" else 2], shapes[1:2] + shapes[3:]
    for prologue, shared in inputs:
        spec = LinearSpec(k=k, segments=(Segment(fmt, rows),), prologue=prologue, eps=1e-5)
        ref = w @ (rms_norm(x, nw, 1e-5) if prologue == "rmsnorm" else x)
        for tpr, ilp, sg in shapes:
            kernel = matvec_kernel(spec, wg=64, tpr=tpr, subgroups=sg, shared_bytes=shared, ilp=ilp, spread=True)
            assert ("upos" in kernel.wgsl) == (fmt != "q8_0")
            binds = {"w0": wb, "x": xb, "y": yb} | ({"pv": pvb} if prologue == "rmsnorm" else {})
            run_kernel(gpu, kernel, binds, matvec_grid(spec, 64, tpr))
            assert rel_err(read(gpu, yb, rows), ref) < 1e-5, (prologue, shared, tpr, ilp)
        break_words = kernel.wgsl.replace("i * c + (u - b * TPR)", "i + (u - b * TPR)") if fmt != "q8_0" else ""
        if break_words:  # the test sees a wrong placement of the words
            run_kernel(gpu, Kernel(kernel.name, break_words, kernel.bindings), binds, matvec_grid(spec, 64, 16))
            assert rel_err(read(gpu, yb, rows), ref) > 1e-3


def _two_segments(gpu, rng, k, *segs):
    """Two weight segments (fmt, rows) of row length k (uploaded), their rows stacked, a random x
    and norm weight (uploaded), an output buffer, and the segments for a LinearSpec."""
    (f0, r0), (f1, r1) = segs
    w0, b0 = _weight(gpu, f0, r0, k, rng)
    w1, b1 = _weight(gpu, f1, r1, k, rng)
    x = rng.standard_normal(k).astype(np.float32)
    nw = rng.standard_normal(k).astype(np.float32)
    return (np.concatenate([w0, w1]), b0, b1, x, nw, gpu.upload(x), gpu.upload(nw), gpu.buffer((r0 + r1) * 4),
            (Segment(f0, r0), Segment(f1, r1)))


def test_matvec_early_first_units(gpu):
    """`early`: the first units' weight words requested before the prologue and decoded after
    it. Two segments of float formats (f16 and bf16, 4 words a unit), rows split between them
    inside a row pair; row groups wider than the row's units (lanes with none) and narrower
    (the loop goes on after the first units), 1 to 3 early units, more than a lane has; plain
    and RMSNorm inputs, staged or not; spread and not. A kernel that decodes the wrong row's
    or the wrong unit's words must fail."""
    k, r0, r1 = 200, 23, 22
    w, b0, b1, x, nw, xb, pvb, yb, segs = _two_segments(gpu, np.random.default_rng(12), k, ("f16", r0), ("bf16", r1))
    sgs = gpu.subgroups_wgsl(on_cpu=True)
    for prologue, shared, tpr, spread, sg, early in (
            ("rmsnorm", 32768, 16, True, None, 1), ("rmsnorm", 0, 2, False, None, 1), ("plain", 0, 8, True, sgs, 1),
            ("rmsnorm", 32768, 2, True, None, 3), ("rmsnorm", 0, 8, True, sgs, 2), ("plain", 0, 2, False, None, 2)):
        spec = LinearSpec(k=k, segments=segs, prologue=prologue, eps=1e-5)
        ref = w @ (rms_norm(x, nw, 1e-5) if prologue == "rmsnorm" else x)
        kernel = matvec_kernel(spec, wg=64, tpr=tpr, subgroups=sg, shared_bytes=shared, spread=spread, early=early)
        assert kernel.wgsl.count("raw_row(er0") == early
        binds = {"w0": b0, "w1": b1, "x": xb, "y": yb} | ({"pv": pvb} if prologue == "rmsnorm" else {})
        run_kernel(gpu, kernel, binds, matvec_grid(spec, 64, tpr))
        assert rel_err(read(gpu, yb, r0 + r1), ref) < 1e-5, (prologue, shared, tpr, spread, early)
    for a, b in (("dec_row(r1c, ew1_0)", "dec_row(r1c, ew0_0)"), ("dec_row(r0, ew0_1)", "dec_row(r0, ew0_0)")):
        wrong = kernel.wgsl.replace(a, b)
        run_kernel(gpu, Kernel(kernel.name, wrong, kernel.bindings), binds, matvec_grid(spec, 64, tpr))
        assert rel_err(read(gpu, yb, r0 + r1), ref) > 1e-3, b
    # the switch is ignored where it does not apply (several units in flight, quantized weights)
    assert "raw_row" not in matvec_kernel(spec, wg=64, tpr=8, ilp=2, early=2).wgsl
    q = LinearSpec(k=224, segments=(Segment("q8_0", 5),))
    assert "raw_row" not in matvec_kernel(q, wg=64, tpr=8, early=2).wgsl


def test_rmsnorm_prologue_residual_epilogue_last_row(gpu):
    rng = np.random.default_rng(3)
    k, rows, t = 72, 29, 4
    w, wb = _weight(gpu, "f16", rows, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    nw = rng.standard_normal(k).astype(np.float32)
    pv = np.concatenate([np.zeros(8, np.float32), nw])  # norm weight at float offset 8
    y0 = rng.standard_normal(rows).astype(np.float32)
    xb, pvb, yb = gpu.upload(x), gpu.upload(pv), gpu.upload(y0)
    # subgroup reduction where the backend has it (on llvmpipe the subgroup is 8 lanes wide)
    # staged in workgroup memory or not, with subgroup reductions where the backend has them
    # and several row blocks per workgroup (the last one ragged); with subgroups, row groups of
    # one subgroup (tpr 8 on llvmpipe's 8 lanes) and of several (tpr 32, 64), and several a
    # subgroup summed by shuffles (tpr 2, 4 on llvmpipe's; 2 to 16 on a GPU's 32 lanes)
    sgs = gpu.subgroups_wgsl(on_cpu=True)
    for tpr, sg, shared, ilp, blocks, shuffle in (
            (8, sgs, 32768, 1, 1, False), (8, sgs, 0, 1, 1, False), (32, None, 32768, 1, 1, False),
            (1, None, 0, 1, 1, False), (2, None, 0, 1, 1, False), (1, None, 0, 2, 1, False),
            (1, None, 32768, 3, 1, False), (8, sgs, 32768, 1, 3, False), (32, None, 32768, 1, 2, False),
            (2, None, 0, 2, 4, False), (32, sgs, 32768, 1, 1, False), (64, sgs, 0, 1, 2, False),
            (4, sgs, 32768, 1, 1, True), (2, sgs, 0, 1, 3, True), (16, sgs, 32768, 2, 1, True),
            (8, sgs, 32768, 1, 1, "at once"), (4, None, 32768, 1, 2, "at once")):
        gpu.write(yb, y0)
        spec = LinearSpec(k=k, segments=(Segment("f16", rows),), prologue="rmsnorm", epilogue="add",
                          eps=1e-5, nw_off=8, last_row=True)
        # ("at once": 16 threads, each staging 2 words of x's 18 (a ragged row of 72), their loads first)
        at_once = shuffle == "at once"
        wg = 16 if at_once else 64
        kernel = matvec_kernel(spec, wg=wg, tpr=tpr, subgroups=sg, shared_bytes=shared, ilp=ilp, blocks=blocks,
                               shuffle=shuffle is True, at_once=at_once)
        assert ("subgroupShuffleXor" in kernel.wgsl) == (shuffle is True and sg is not None)
        assert ("let v1 = " in kernel.wgsl) == at_once
        run_kernel(gpu, kernel, {"w0": wb, "x": xb, "pv": pvb, "y": yb}, matvec_grid(spec, wg, tpr, blocks), n=t)
        ref = y0 + w @ rms_norm(x[t - 1], nw, 1e-5)
        assert rel_err(read(gpu, yb, rows), ref) < 1e-5, (tpr, blocks, shuffle)


def qkv_case(gpu, fmt, d, ctx, k, t, pos0, seed, x_seen=lambda x: x, kv_f16=False):
    """A fused QKV projection (3 query heads, 1 KV head of d dimensions) with bias and RoPE:
    its spec, and `check(run, n, tol)`, which makes the buffers, has `run(buffers)` launch a
    kernel on them, and compares q and the KV cache of the first n tokens with numpy (on x as
    `x_seen` rounds it; nothing written outside positions pos0..pos0+n). With `kv_f16` the
    cache holds f16s: they must equal the reference rounded to f16, give or take the last bit."""
    rng = np.random.default_rng(seed)
    hq, hkv = 3, 1
    qd, kvd = hq * d, hkv * d
    rows = qd + 2 * kvd
    w, wb = _weight(gpu, fmt, rows, k, rng)
    x = rng.standard_normal((t, k)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    inv = (1.0 / 10000 ** (np.arange(0, d, 2) / d)).astype(np.float32)
    pv = np.concatenate([bias, np.zeros(-rows % 4, np.float32), inv])
    spec = LinearSpec(k=k, segments=(Segment(fmt, rows),), epilogue="qkv", bias=True,
                      qkv=QkvShape(qd, kvd, d, ctx, kv_f16=kv_f16), bias_off=0, rope_off=rows + (-rows % 4))
    y = x_seen(x) @ w.T + bias
    pos = np.arange(pos0, pos0 + t)
    q_ref = rope_pairs(y[:, :qd].reshape(t, hq, d), pos, inv).reshape(t, qd)
    k_ref = rope_pairs(y[:, qd:qd + kvd].reshape(t, hkv, d), pos, inv)
    v_ref = y[:, qd + kvd:].reshape(t, hkv, d)

    def check(run, n, tol):
        qb, kvb = gpu.buffer(t * qd * 4), gpu.buffer(2 * kvd * ctx * (2 if kv_f16 else 4))
        run({"w0": wb, "x": gpu.upload(x), "pv": gpu.upload(pv), "q": qb, "kv": kvb})
        kv = read(gpu, kvb, (2, hkv, ctx, d), np.float16 if kv_f16 else np.float32).astype(np.float32)
        ktol = max(tol, 1e-3) if kv_f16 else tol  # f16 keeps 11 bits
        assert rel_err(read(gpu, qb, (t, qd))[:n], q_ref[:n]) < tol
        assert rel_err(kv[0][:, pos0:pos0 + n].transpose(1, 0, 2), k_ref[:n]) < ktol
        assert rel_err(kv[1][:, pos0:pos0 + n].transpose(1, 0, 2), v_ref[:n]) < ktol
        assert not kv[:, :, :pos0].any() and not kv[:, :, pos0 + n:].any()

    return spec, check


@pytest.mark.parametrize("kv_f16", [False, True])
def test_qkv_epilogue_bias_rope_and_cache(gpu, kv_f16):
    """Q/K/V rows with bias; Q and K rotated in adjacent pairs; K/V written at their position
    (as f32s, or as f16 pairs packed in u32s)."""
    t, pos0 = 3, 5
    spec, check = qkv_case(gpu, "f32", 12, 16, 64, t, pos0, seed=4, kv_f16=kv_f16)
    for kernel, grid, n in ((matmul_kernel(spec), matmul_grid(spec)(t), t), (matvec_kernel(spec), matvec_grid(spec), 1)):
        check(lambda b, kernel=kernel, grid=grid, n=n: run_kernel(gpu, kernel, b, grid, n=n, pos=pos0), n, 1e-5)


def test_split_finish_applies_the_qkv_epilogue_to_summed_partials(gpu):
    """A QKV matmul split 3 ways over K (partials, no bias), then split_finish: the sums with
    bias, RoPE and the KV append, as the unsplit matmul's epilogue gives them."""
    from dataclasses import replace

    t, pos0, splits = 5, 3, 3
    spec, check = qkv_case(gpu, "q8_0", 12, 16, 160, t, pos0, seed=6)
    part_spec = replace(spec, epilogue="partial", splits=splits, bias=False)

    def run(b):
        part = gpu.buffer(t * splits * spec.rows * 4)
        run_kernel(gpu, matmul_kernel(part_spec), {**b, "y": part}, matmul_grid(part_spec)(t), n=t, pos=pos0)
        run_kernel(gpu, epilogue_kernel(spec, splits, "part"), {**b, "part": part}, epilogue_grid(spec)(t), n=t,
                   pos=pos0)

    check(run, t, 1e-5)


@pytest.mark.parametrize("epilogue", ["silu_mul", "store"])
def test_split_finish_sums_partials_under_any_epilogue(gpu, epilogue):
    """split_finish over random partials (odd rows, 4 splits, a token past st.n left alone):
    SiLU(gate sum) * up sum for the gated epilogue, the plain sums for store."""
    rng = np.random.default_rng(11)
    t, n, rows, splits = 7, 6, 2 * 37 if epilogue == "silu_mul" else 37, 4
    spec = LinearSpec(k=32, segments=(Segment("f32", rows),), epilogue=epilogue)
    part = rng.standard_normal((t, splits, rows)).astype(np.float32)
    out = rows // 2 if epilogue == "silu_mul" else rows
    yb = gpu.upload(np.full((t, out), 7.0, np.float32))
    run_kernel(gpu, epilogue_kernel(spec, splits, "part"), {"part": gpu.upload(part), "y": yb},
               epilogue_grid(spec)(t), n=n)
    sums = part.sum(1)
    want = silu(sums[:, :out]) * sums[:, out:] if epilogue == "silu_mul" else sums
    got = read(gpu, yb, (t, out))
    assert rel_err(got[:n], want[:n]) < 1e-5 and (got[n:] == 7.0).all()


@pytest.mark.parametrize("unroll", [1, 3])
@pytest.mark.parametrize(("h", "d", "wg", "at_once"), [(3, 8, 128, False), (3, 8, 128, True), (3, 44, 32, True),
                                                      (5, 64, 64, True)])
def test_attn_prologue_merges_split_partials(gpu, unroll, h, d, wg, at_once):
    """O's prologue merges the split-K partials of 14 keys (4 splits used of 5): staged or
    where used; with AttnShape.at_once in one pass for all of a thread's words (one word a
    thread; two, the second past a ragged row's end (132 inputs of 160); five a thread), the
    passes `unroll` splits each."""
    rng = np.random.default_rng(5)
    chunk, splits, pos = 4, 5, 13  # 14 keys -> 4 splits used
    used = -(-(pos + 1) // chunk)
    m = rng.standard_normal((h, splits)).astype(np.float32)
    l_ = rng.uniform(0.5, 2, (h, splits)).astype(np.float32)
    acc = rng.standard_normal((h, splits, d)).astype(np.float32)
    wgt = np.exp(m[:, :used] - m[:, :used].max(1, keepdims=True))
    o = (wgt[..., None] * acc[:, :used]).sum(1) / (wgt * l_[:, :used]).sum(1)[:, None]
    rows, k = 11, h * d
    w, wb = _weight(gpu, "f32", rows, k, rng)
    spec = LinearSpec(k=k, segments=(Segment("f32", rows),), prologue="attn",
                      attn=AttnShape(h, d, chunk, splits, unroll=unroll, at_once=at_once))
    mlb, accb, yb = gpu.upload(np.stack([m, l_], -1)), gpu.upload(acc), gpu.buffer(rows * 4)
    for shared in (32768, 0):
        kernel = matvec_kernel(spec, wg=wg, tpr=min(32, wg), shared_bytes=shared)
        assert ("mx0" in kernel.wgsl) == (at_once and shared > 0)
        run_kernel(gpu, kernel, {"w0": wb, "ml": mlb, "acc": accb, "y": yb}, matvec_grid(spec, wg, min(32, wg)), pos=pos)
        assert rel_err(read(gpu, yb, rows), w @ o.reshape(-1)) < 1e-5, shared


def test_matvec_f16_arithmetic(gpu):
    """`half`: f16 weights times x in f16 (8 products summed in f16, then f32), against numpy
    on the f16-rounded input: plain (staged for it, or not where it does not fit), RMSNorm and
    split-attention inputs, two segments, several units in flight, row blocks, spread words
    and early units, the one-lane rows of a CPU adapter and subgroup sums; other formats
    ignore the switch."""
    if not half_ok(gpu):
        pytest.skip("f16 arithmetic needs shader-f16, and bitcasts to f16 that wgpu-native's naga types right")
    rng = np.random.default_rng(13)
    k, r0, r1 = 200, 23, 20
    w, b0, b1, x, nw, xb, pvb, yb, segs = _two_segments(gpu, rng, k, ("f16", r0), ("f16", r1))
    sgs = gpu.subgroups_wgsl(on_cpu=True)
    h = f16_rounded
    for prologue, shared, tpr, sg, ilp, blocks, spread, early in (
            ("plain", 32768, 1, None, 1, 1, False, 0), ("plain", 0, 8, sgs, 1, 1, True, 0),
            ("rmsnorm", 32768, 8, sgs, 1, 2, True, 0), ("rmsnorm", 0, 2, None, 2, 1, False, 0),
            ("plain", 32768, 16, None, 1, 1, True, 2), ("rmsnorm", 32768, 4, None, 3, 1, True, 0)):
        spec = LinearSpec(k=k, segments=segs, prologue=prologue, eps=1e-5)
        xin = rms_norm(x, nw, 1e-5) if prologue == "rmsnorm" else x
        # the input as the kernel rounds it: x (times the norm weight, the 1/rms after the sum)
        seen = h(x * nw) * (xin / (x * nw)) if prologue == "rmsnorm" else h(x)
        kernel = matvec_kernel(spec, wg=64, tpr=tpr, subgroups=sg, shared_bytes=shared, ilp=ilp, blocks=blocks,
                               spread=spread, early=early, half=True)
        assert "enable f16;" in kernel.wgsl and "vec4<f16>" in kernel.wgsl
        binds = {"w0": b0, "w1": b1, "x": xb, "y": yb} | ({"pv": pvb} if prologue == "rmsnorm" else {})
        run_kernel(gpu, kernel, binds, matvec_grid(spec, 64, tpr, blocks))
        got = read(gpu, yb, r0 + r1)
        case = (prologue, shared, tpr, ilp, blocks, spread, early)
        assert rel_err(got, w @ seen) < 3e-3, case  # f16 sums of 8 products
        assert rel_err(got, w @ xin) < 5e-3, case
    # split attention partials merged into the input (O's mat-vec)
    hh, d, chunk, splits, pos = 3, 8, 4, 5, 13
    used = -(-(pos + 1) // chunk)
    m = rng.standard_normal((hh, splits)).astype(np.float32)
    l_ = rng.uniform(0.5, 2, (hh, splits)).astype(np.float32)
    acc = rng.standard_normal((hh, splits, d)).astype(np.float32)
    wgt = np.exp(m[:, :used] - m[:, :used].max(1, keepdims=True))
    o = ((wgt[..., None] * acc[:, :used]).sum(1) / (wgt * l_[:, :used]).sum(1)[:, None]).reshape(-1)
    wa, wab = _weight(gpu, "f16", 11, hh * d, rng)
    spec = LinearSpec(k=hh * d, segments=(Segment("f16", 11),), prologue="attn", attn=AttnShape(hh, d, chunk, splits))
    run_kernel(gpu, matvec_kernel(spec, half=True), {"w0": wab, "ml": gpu.upload(np.stack([m, l_], -1)),
                                                     "acc": gpu.upload(acc), "y": yb}, matvec_grid(spec), pos=pos)
    assert rel_err(read(gpu, yb, 11), wa @ o) < 3e-3
    # the switch is ignored where it does not apply
    for fmt in ("bf16", "f32", "q8_0"):
        q = LinearSpec(k=224, segments=(Segment(fmt, 5),))
        assert "f16;" not in matvec_kernel(q, wg=64, tpr=8, half=True).wgsl


def test_matvec_post_norm_prologue(gpu):
    """Gemma's output norm folded into the next mat-vec (prologue "post"): the stored row
    `part` normed and weighted by the earlier layer's parameters (`ppv`), added to the residual
    `x`, the sum written to `hout` once and normed for this mat-vec; ragged k, subgroup and
    tree sums, f32 and int8 activations, f16 arithmetic where the device has it."""
    rng = np.random.default_rng(14)
    k, rows = 200, 45
    w, wb = _weight(gpu, "f16", rows, k, rng)
    wq, wqb = _weight(gpu, "q8_0", rows, 224, rng)
    sgs = gpu.subgroups_wgsl(on_cpu=True)

    def case(fmt, k, w, wb, **kw):
        part = rng.standard_normal(k).astype(np.float32)
        h = rng.standard_normal(k).astype(np.float32)
        post_w = rng.uniform(0.5, 1.5, k).astype(np.float32)
        nw = rng.uniform(0.5, 1.5, k).astype(np.float32)
        v = h + rms_norm(part, post_w, 1e-5)
        pv = np.concatenate([np.zeros(8, np.float32), nw])  # the norm weight at float offset 8
        ppv = np.concatenate([np.zeros(4, np.float32), post_w])  # the post weight at 4
        spec = LinearSpec(k=k, segments=(Segment(fmt, w.shape[0]),), prologue="post", eps=1e-5, nw_off=8, post_off=4)
        hout, yb = gpu.buffer(k * 4), gpu.buffer(w.shape[0] * 4)
        kernel = matvec_kernel(spec, wg=64, shared_bytes=32768, **kw)
        run_kernel(gpu, kernel, {"w0": wb, "x": gpu.upload(h), "part": gpu.upload(part), "ppv": gpu.upload(ppv),
                                 "pv": gpu.upload(pv), "hout": hout, "y": yb}, matvec_grid(spec, 64, kw.get("tpr", 32)))
        assert rel_err(read(gpu, hout, k), v) < 1e-5
        return read(gpu, yb, w.shape[0]), w @ rms_norm(v, nw, 1e-5)

    for kw in ({"tpr": 8, "subgroups": sgs}, {"tpr": 2}, {"tpr": 1}):  # 3, 12 and 23 workgroups
        got, want = case("f16", k, w, wb, **kw)
        assert rel_err(got, want) < 1e-5, kw
    got, want = case("q8_0", 224, wq, wqb, tpr=8, int8=True)
    assert rel_err(got, want) < 2e-2
    if half_ok(gpu):
        got, want = case("f16", k, w, wb, tpr=8, half=True)
        assert rel_err(got, want) < 5e-3


def test_matvec_rmsnorm_in_a_workgroup_narrower_than_a_subgroup(gpu):
    """A mat-vec whose workgroup is narrower than the hardware subgroup (a mixture's router in
    a shape of its own, Tuning.router_mv): its RMSNorm prologue's sum of x² takes that one
    subgroup's sum, where dividing the threads by the subgroup size counted none (an H100's
    32-lane subgroups under 16-thread workgroups: the router's logits times inf)."""
    sgs = gpu.subgroups_wgsl(on_cpu=True)
    if sgs is None:
        pytest.skip("no subgroup operations on this adapter")
    k, rows = 96, 7
    w, b0, b1, x, nw, xb, pvb, yb, segs = _two_segments(gpu, np.random.default_rng(5), k, ("f32", 4), ("f32", rows - 4))
    ref = w @ rms_norm(x, nw, 1e-5)
    for shared in (32768, 0):
        spec = LinearSpec(k=k, segments=segs, prologue="rmsnorm", eps=1e-5)
        kernel = matvec_kernel(spec, wg=2, tpr=2, subgroups=sgs, shared_bytes=shared)
        run_kernel(gpu, kernel, {"w0": b0, "w1": b1, "x": xb, "y": yb, "pv": pvb}, matvec_grid(spec, 2, 2))
        assert rel_err(read(gpu, yb, rows), ref) < 1e-5, shared
