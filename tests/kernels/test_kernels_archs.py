"""The kernel options and kernels that newer architectures add (Qwen3, Gemma 2/3, Phi-3,
SmolLM3) against numpy, on odd sizes: GELU·mul, soft-capped logits, embedding scale, LongRoPE's
scale of the rotated dims, sliding-window and soft-capped attention (decode and prompt, heads
of 256 too), per-head q/k RMSNorm + RoPE + KV append, Gemma's output norms."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_harness import read, rel_err, run_kernel

from reference import dequantize, rms_norm, rope_pairs
from webgpu_llm.kernels import attention as att
from webgpu_llm.kernels.common import PAGE, Slots, pack_state
from webgpu_llm.kernels.elementwise import combine_kernel, gelu_mul_kernel, rope_append_kernel
from webgpu_llm.kernels.elementwise import grid as ew_grid
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.kernels.linear import (
    LinearSpec,
    QkvShape,
    Segment,
    matmul_grid,
    matmul_kernel,
    matvec_grid,
    matvec_kernel,
    thin_matmul_grid,
    thin_matmul_kernel,
)
from webgpu_llm.kernels.norms import post_norm_kernel, qk_norm_grid, qk_norm_kernel
from webgpu_llm.kernels.rows import embed_kernel
from webgpu_llm.models.presets import random_weight
from webgpu_llm.runtime.program import Program


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def attention_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, pos0: int, window: int = 0,
                  softcap: float = 0.0, scale: float = 0.0, sinks: np.ndarray | None = None) -> np.ndarray:
    """Causal GQA attention, each query seeing its last `window` keys (0: all), scores
    scaled (0: 1/sqrt(d)) then soft-capped as transformers' eager attention does; `sinks`:
    a logit per head that joins the softmax without a value (gpt-oss)."""
    t, hq, d = q.shape
    hkv = k.shape[1]
    out = np.zeros_like(q, dtype=np.float64)
    keys, qpos = np.arange(k.shape[0])[None, :], (pos0 + np.arange(t))[:, None]
    mask = (keys > qpos) | ((keys <= qpos - window) if window else False)
    for h in range(hq):
        kh = h // (hq // hkv)
        s = q[:, h, :].astype(np.float64) @ k[:, kh, :].T * (scale or 1 / np.sqrt(d))
        if softcap:
            s = np.tanh(s / softcap) * softcap
        s = np.where(mask, -np.inf, s)
        if sinks is not None:
            s = np.concatenate([s, np.full((t, 1), sinks[h])], axis=1)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, h, :] = p[:, :k.shape[0]] @ v[:, kh, :]
    return out.astype(np.float32)


def _weight(gpu, fmt, rows, k, rng):
    raw = random_weight(fmt, rows, k, rng)
    return dequantize(fmt, raw, k), gpu.upload(FORMATS[fmt].pack(raw, k))


@pytest.mark.parametrize("fmt", ["f16", "q8_0"])
def test_gelu_mul_epilogue(gpu, fmt):
    """gate/up rows split in halves, tanh-GELU(gate) * up: mat-vec, tiled and thin matmuls,
    and the unfused kernel; big gates too (the tanh argument is clamped, not NaN)."""
    rng = np.random.default_rng(20)
    k, f, t = 96, 37, 5
    w, wb = _weight(gpu, fmt, 2 * f, k, rng)
    x = (rng.standard_normal((t, k)) * 3).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment(fmt, 2 * f),), epilogue="gelu_mul")
    h = x @ w.T
    ref = (gelu_tanh(h[:, :f]) * h[:, f:]).astype(np.float32)
    xb, yb = gpu.upload(x), gpu.buffer(t * f * 4)
    run_kernel(gpu, matvec_kernel(spec, wg=64, tpr=8), {"w0": wb, "x": xb, "y": yb}, matvec_grid(spec, 64, 8))
    assert rel_err(read(gpu, yb, f), ref[0]) < 1e-5
    run_kernel(gpu, matmul_kernel(spec), {"w0": wb, "x": xb, "y": yb}, matmul_grid(spec)(t), n=t)
    assert rel_err(read(gpu, yb, (t, f)), ref) < 1e-5
    run_kernel(gpu, thin_matmul_kernel(spec, 4, 64, 8), {"w0": wb, "x": xb, "y": yb}, thin_matmul_grid(spec, 4, 64, 8)(t),
               n=t)
    assert rel_err(read(gpu, yb, (t, f)), ref) < 1e-5
    g = np.concatenate([np.array([60.0, -60.0, 0.5], np.float32), h[0, 3:f].astype(np.float32)])
    u = h[0, f:].astype(np.float32)
    run_kernel(gpu, gelu_mul_kernel(f), {"x": gpu.upload(np.concatenate([g, u])), "y": yb}, ew_grid(f))
    got = read(gpu, yb, f)
    assert np.isfinite(got).all() and rel_err(got, (gelu_tanh(g) * u).astype(np.float32)) < 1e-5


def test_softcapped_store_epilogue(gpu):
    """Final-logit soft-capping in the head's store: cap * tanh(y / cap), mat-vec and matmul."""
    rng = np.random.default_rng(21)
    k, rows, t, cap = 72, 53, 3, 3.5
    w, wb = _weight(gpu, "f32", rows, k, rng)
    x = (rng.standard_normal((t, k)) * 4).astype(np.float32)
    spec = LinearSpec(k=k, segments=(Segment("f32", rows),), softcap=cap)
    ref = (np.tanh((x @ w.T) / cap) * cap).astype(np.float32)
    xb, yb = gpu.upload(x), gpu.buffer(t * rows * 4)
    run_kernel(gpu, matvec_kernel(spec), {"w0": wb, "x": xb, "y": yb}, matvec_grid(spec))
    assert rel_err(read(gpu, yb, rows), ref[0]) < 1e-5
    run_kernel(gpu, matmul_kernel(spec), {"w0": wb, "x": xb, "y": yb}, matmul_grid(spec)(t), n=t)
    assert rel_err(read(gpu, yb, (t, rows)), ref) < 1e-5
    assert "tanh" not in matvec_kernel(LinearSpec(k=k, segments=(Segment("f32", rows),))).wgsl


def test_scaled_embedding(gpu):
    rng = np.random.default_rng(22)
    vocab, k, t = 31, 72, 4
    raw = random_weight("f16", vocab, k, rng)
    toks = np.array([3, 30, 0, 7, 7], np.uint32)
    x = gpu.buffer(t * k * 4)
    spec = LinearSpec(k=k, segments=(Segment("f16", vocab),))
    run_kernel(gpu, embed_kernel(spec, scale=8.485), {"w0": gpu.upload(FORMATS["f16"].pack(raw, k)),
                                                      "tokens": gpu.upload(toks), "x": x}, (t, 1, 1), n=t, pos=1)
    assert rel_err(read(gpu, x, (t, k)), dequantize("f16", raw, k)[toks[1:5]] * np.float32(8.485)) < 1e-6


def test_longrope_scales_only_the_rotated_pairs(gpu):
    """Partial rotary (the first 2 * pairs dims of a head rotate, the rest have frequency 0 and
    stay) with LongRoPE's attention factor on the rotated dims only; K and V appended."""
    rng = np.random.default_rng(23)
    hq, hkv, d, ctx, pos, pairs, a = 3, 1, 20, 16, 9, 7, 1.19
    rows = (hq + 2 * hkv) * d
    x = rng.standard_normal(rows).astype(np.float32)
    inv = np.zeros(d // 2, np.float32)
    inv[:pairs] = 1.0 / 100 ** (np.arange(pairs) / pairs)
    q = QkvShape(hq * d, hkv * d, d, ctx, rope_scale=a, rope_pairs=pairs)
    qb, kvb = gpu.buffer(hq * d * 4), gpu.buffer(2 * hkv * d * ctx * 4)
    run_kernel(gpu, rope_append_kernel(q, 0), {"x": gpu.upload(x), "pv": gpu.upload(inv), "q": qb, "kv": kvb},
               ew_grid(rows // 2), pos=pos)
    scale = np.ones(d, np.float32)
    scale[:2 * pairs] = a
    p = np.array([pos])
    want_q = rope_pairs(x[:hq * d].reshape(1, hq, d), p, inv) * scale
    want_k = rope_pairs(x[hq * d:(hq + hkv) * d].reshape(1, hkv, d), p, inv) * scale
    kv = read(gpu, kvb, (2, hkv, ctx, d))
    assert rel_err(read(gpu, qb, (1, hq, d)), want_q) < 1e-5
    assert rel_err(kv[0][:, pos], want_k[0]) < 1e-5
    assert rel_err(kv[1][:, pos], x[(hq + hkv) * d:].reshape(hkv, d)) < 1e-6


@pytest.mark.parametrize("d, t, pos0, window, softcap", [(24, 23, 4, 7, 0.0), (24, 37, 0, 16, 2.5),
                                                         (256, 19, 11, 9, 0.0), (256, 5, 3, 0, 1.5)])
def test_prompt_attention_window_and_softcap(gpu, d, t, pos0, window, softcap):
    """Sliding windows shorter than the prompt (inside a block of 16 queries, across blocks and
    key chunks), soft-capped scores with their own scale, and heads of 256 (chunks of 8 keys,
    q read where it is used): one sequence, and the same rows as a batched step's blocks of 1,
    3 and 16 rows."""
    rng = np.random.default_rng(24)
    hq, hkv, ctx, scale = 4, 2, 64, 0.15
    kv = np.zeros((2, hkv, ctx, d), np.float32)
    kv[:, :, :pos0 + t] = rng.standard_normal((2, hkv, pos0 + t, d))
    q = rng.standard_normal((t, hq, d)).astype(np.float32)
    spec = att.AttentionSpec(hq, hkv, d, ctx, window=window, softcap=softcap, scale=scale)
    k_, v_ = kv[0].transpose(1, 0, 2)[:pos0 + t], kv[1].transpose(1, 0, 2)[:pos0 + t]
    want = attention_ref(q, k_, v_, pos0, window, softcap, scale)
    out = gpu.buffer(t * hq * d * 4)
    run_kernel(gpu, att.prompt_attention_kernel(spec), {"q": gpu.upload(q), "kv": gpu.upload(kv), "out": out},
               att.prompt_attention_grid(spec)(t), n=t, pos=pos0)
    assert rel_err(read(gpu, out, (t, hq, d)), want) < 1e-5
    # a batched step: the same sequence in slot 1 of 2, its cache in pages 6, 1, 4, 3 of 8
    slots = Slots(2, ctx, pages=8)
    table = np.zeros((2, slots.max_pages), np.uint32)
    table[1] = [6, 1, 4, 3]
    pool = np.zeros((8, 2, hkv, PAGE, d), np.float32)
    for i, pg in enumerate(table[1]):
        pool[pg] = kv[:, :, i * PAGE:(i + 1) * PAGE]
    # blocks of 1 and 3 rows first (a decode row, a short chunk: the heads of a KV head share a
    # workgroup), then of 16
    blocks, b0 = [], 0
    for n in (1, 3, *[att.BQ] * t):
        if b0 < t:
            blocks.append((b0, min(n, t - b0), 1, pos0 + b0))
            b0 += blocks[-1][1]
    blocks = np.array(blocks, np.uint32)
    for pack in (True, False):  # the heads of a KV head together (short blocks), or a workgroup a head
        out2 = gpu.buffer(t * hq * d * 4)
        run_kernel(gpu, att.prompt_attention_kernel(spec, slots, pack=pack),
                   {"q": gpu.upload(q), "kv": gpu.upload(pool), "out": out2, "blocks": gpu.upload(blocks),
                    "pages": gpu.upload(table)}, (hq, len(blocks), 1), n=t)
        assert rel_err(read(gpu, out2, (t, hq, d)), want) < 1e-5, pack


@pytest.mark.parametrize("sub,wg,window,softcap,pos,cap", [(False, 0, 20, 0.0, 52, 0), (True, 64, 20, 1.5, 52, 0),
                                                           (False, 32, 16, 0.0, 47, 0), (True, 0, 40, 2.0, 30, 0),
                                                           (False, 0, 0, 1.0, 52, 0), (False, 0, 20, 0.0, 52, 2),
                                                           (True, 64, 20, 1.5, 95, 2), (False, 32, 0, 1.0, 95, 3)])
@pytest.mark.parametrize("at_once", [False, True])
def test_decode_attention_window_and_softcap(gpu, sub, wg, window, softcap, pos, cap, at_once):
    """Split-K decode attention with a sliding window (splits before it hold nothing, the
    first one starts inside it; a window longer than the keys so far) and soft-capped scores;
    merged by the combine kernel and by the O projection's prologue; with the splits capped,
    each of several chunks (the window starting inside the second of two of 48 keys)."""
    rng = np.random.default_rng(25)
    hq, hkv, d, ctx, chunk, scale = 4, 2, 16, 100, 16, 0.2
    kv = np.zeros((2, hkv, ctx, d), np.float32)
    kv[:, :, :pos + 1] = rng.standard_normal((2, hkv, pos + 1, d))
    q = rng.standard_normal((1, hq, d)).astype(np.float32)
    spec = att.AttentionSpec(hq, hkv, d, ctx, chunk, wg, window=window, softcap=softcap, scale=scale, cap=cap)
    ml, acc = gpu.buffer(hq * spec.max_splits * 8), gpu.buffer(hq * spec.max_splits * d * 4)
    # stale partials from an earlier step: a split the window leaves out must not be read
    gpu.write(ml, np.full(hq * spec.max_splits * 2, 7.0, np.float32))
    bufs = {"q": gpu.upload(q), "kv": gpu.upload(kv), "ml": ml, "acc": acc}
    st = gpu.upload(pack_state(pos=pos, n=1))
    ashape = spec.shape(unroll=3 if sub else 1, at_once=at_once)  # (the merge's passes; O's in one)
    rows = 13
    w = rng.standard_normal((rows, hq * d)).astype(np.float32)
    o_spec = LinearSpec(k=hq * d, segments=(Segment("f32", rows),), prologue="attn", attn=ashape)
    y, yo = gpu.buffer(hq * d * 4), gpu.buffer(rows * 4)
    prog = Program(gpu)
    prog.add(att.attention_kernel(spec, gpu.subgroups_wgsl(on_cpu=True) if sub else None), {"st": st, **bufs},
             att.attention_grid(spec))
    prog.add(combine_kernel(ashape), {"st": st, **bufs, "y": y}, ew_grid(hq * d // 4))
    prog.add(matvec_kernel(o_spec), {"st": st, **bufs, "w0": gpu.upload(w), "y": yo}, matvec_grid(o_spec))
    prog.run()
    k_, v_ = kv[0].transpose(1, 0, 2)[:pos + 1], kv[1].transpose(1, 0, 2)[:pos + 1]
    want = attention_ref(q, k_, v_, pos, window, softcap, scale)
    assert rel_err(read(gpu, y, (1, hq, d)), want) < 1e-5
    assert rel_err(read(gpu, yo, rows), w @ want.reshape(-1)) < 1e-5
    # a batched step's one row: the same sequence in slot 1 of 2, its cache in pages out of order
    slots = Slots(2, ctx, pages=9)
    table = np.zeros((2, slots.max_pages), np.uint32)
    table[1, :slots.max_pages] = [6, 1, 4, 8, 3, 0, 2][:slots.max_pages]
    pool = np.zeros((9, 2, hkv, PAGE, d), np.float32)
    for i, pg in enumerate(table[1]):
        chunk_kv = kv[:, :, i * PAGE:(i + 1) * PAGE]
        pool[pg, :, :, :chunk_kv.shape[2]] = chunk_kv
    paged = {**bufs, "kv": gpu.upload(pool), "pages": gpu.upload(table), "rows": gpu.upload(np.array([[pos, 1]], np.uint32))}
    gpu.write(ml, np.full(hq * spec.max_splits * 2, 7.0, np.float32))
    prog = Program(gpu)
    prog.add(att.attention_kernel(spec, gpu.subgroups_wgsl(on_cpu=True) if sub else None, slots=slots),
             {"st": st, **paged}, att.attention_grid(spec))
    prog.add(matvec_kernel(o_spec), {"st": st, **paged, "w0": gpu.upload(w), "y": yo}, matvec_grid(o_spec))
    prog.run()
    assert rel_err(read(gpu, yo, rows), w @ want.reshape(-1)) < 1e-5


@pytest.mark.parametrize("window,softcap,cap,preload", [(0, 0.0, 0, False), (20, 1.5, 0, False), (20, 1.5, 2, False),
                                                        (0, 0.0, 3, False), (20, 1.5, 2, True), (0, 0.0, 0, True)])
def test_decode_attention_per_block(gpu, window, softcap, cap, preload):
    """A batched step's one-row query blocks through split-K attention (each its own sequence,
    position and pages), merged per block into its row by the combine kernel; a block of three
    rows is left to the prompt kernel (its rows untouched here, and the prompt kernel with
    skip_single leaves the one-row blocks alone); with the splits capped, each block's splits
    spanning chunks as its own position asks."""
    rng = np.random.default_rng(26)
    hq, hkv, d, ctx, chunk, scale = 4, 2, 16, 100, 16, 0.2
    slots = Slots(3, ctx, pages=21)
    kv = rng.standard_normal((3, 2, hkv, ctx, d)).astype(np.float32)  # each slot's cache, contiguous
    table = np.arange(21, dtype=np.uint32).reshape(3, 7)[:, rng.permutation(7)]  # each slot's pages, out of order
    pool = np.zeros((21, 2, hkv, PAGE, d), np.float32)
    for sl in range(3):
        for i, pg in enumerate(table[sl]):
            part = kv[sl, :, :, i * PAGE:(i + 1) * PAGE]
            pool[pg, :, :, :part.shape[2]] = part
    # rows: slot 0 at 52, slot 1's block of 3 rows at 10.., slot 2 at 30
    blocks = np.array([(0, 1, 0, 52), (1, 3, 1, 10), (4, 1, 2, 30)], np.uint32)
    q = rng.standard_normal((5, hq, d)).astype(np.float32)
    spec = att.AttentionSpec(hq, hkv, d, ctx, chunk, window=window, softcap=softcap, scale=scale, cap=cap, preload=preload)
    ashape = spec.shape(at_once=preload)  # (with the preload, the combine's merge in one pass)
    ml, acc = gpu.buffer(3 * hq * spec.max_splits * 8), gpu.buffer(3 * hq * spec.max_splits * d * 4)
    y = gpu.upload(np.full((5, hq, d), 7.0, np.float32))
    bufs = {"q": gpu.upload(q), "kv": gpu.upload(pool), "pages": gpu.upload(table), "blocks": gpu.upload(blocks),
            "ml": ml, "acc": acc}
    st = gpu.upload(pack_state(n=5))
    prog = Program(gpu)
    prog.add(att.attention_kernel(spec, slots=slots, per_block=True), {"st": st, **bufs}, (hq, spec.max_splits, 3))
    prog.add(combine_kernel(ashape, per_block=True), {"st": st, **bufs, "y": y}, (-(-hq * d // 4 // 256), 3, 1))
    prog.run()
    got = read(gpu, y, (5, hq, d))
    for row, sl, pos in ((0, 0, 52), (4, 2, 30)):
        k_, v_ = kv[sl, 0].transpose(1, 0, 2)[:pos + 1], kv[sl, 1].transpose(1, 0, 2)[:pos + 1]
        want = attention_ref(q[row:row + 1], k_, v_, pos, window, softcap, scale)
        assert rel_err(got[row:row + 1], want) < 1e-5, row
    assert (got[1:4] == 7.0).all()
    # the prompt kernel with skip_single: the 3-row block only
    out = gpu.upload(np.full((5, hq, d), 7.0, np.float32))
    run_kernel(gpu, att.prompt_attention_kernel(spec, slots, skip_single=True),
               {"q": gpu.upload(q), "kv": gpu.upload(pool), "out": out, "blocks": gpu.upload(blocks),
                "pages": gpu.upload(table)}, (hq, 3, 1), n=5)
    got2 = read(gpu, out, (5, hq, d))
    assert (got2[[0, 4]] == 7.0).all()
    k_, v_ = kv[1, 0].transpose(1, 0, 2)[:13], kv[1, 1].transpose(1, 0, 2)[:13]
    assert rel_err(got2[1:4], attention_ref(q[1:4], k_, v_, 10, window, softcap, scale)) < 1e-5


def _qk_norm_case(rng, hq, hkv, d, t):
    rows = (hq + 2 * hkv) * d
    x = (rng.standard_normal((t, rows)) * 2).astype(np.float32)
    inv = (1.0 / 1000 ** (np.arange(0, d, 2) / d)).astype(np.float32)
    qn, kn = (1 + 0.3 * rng.standard_normal((2, d))).astype(np.float32)
    pv = np.concatenate([inv, np.zeros(-len(inv) % 4, np.float32), qn, kn])  # rope at 0, norms after it
    q_off = len(inv) + (-len(inv) % 4)
    return x, pv, q_off, q_off + d, qn, kn


@pytest.mark.parametrize("hq, hkv, d, t", [(3, 1, 24, 5), (4, 2, 256, 2)])
def test_qk_norm_rope_append(gpu, hq, hkv, d, t):
    """Raw Q|K|V rows: each q and k head RMS-normalised with its weight, rotated, stored (K to
    the cache); V appended as it is. One sequence at positions pos0.., and a batched step's rows
    at their own slots and positions."""
    rng = np.random.default_rng(26)
    ctx, pos0, eps = 20, 6, 1e-6
    x, pv, q_off, k_off, qn, kn = _qk_norm_case(rng, hq, hkv, d, t)
    qd, kvd = hq * d, hkv * d
    shape = QkvShape(qd, kvd, d, ctx)
    pos = np.arange(pos0, pos0 + t)
    inv = pv[: d // 2]
    qh = rms_norm(x[:, :qd].reshape(t, hq, d), qn, eps)
    kh = rms_norm(x[:, qd:qd + kvd].reshape(t, hkv, d), kn, eps)
    want_q, want_k = rope_pairs(qh, pos, inv), rope_pairs(kh, pos, inv)
    want_v = x[:, qd + kvd:].reshape(t, hkv, d)
    qb, kvb = gpu.buffer(t * qd * 4), gpu.buffer(2 * kvd * ctx * 4)
    bufs = {"x": gpu.upload(x), "pv": gpu.upload(pv), "q": qb, "kv": kvb}
    run_kernel(gpu, qk_norm_kernel(shape, eps, q_off, k_off, 0), bufs, qk_norm_grid(shape)(t), n=t, pos=pos0)
    kv = read(gpu, kvb, (2, hkv, ctx, d))
    assert rel_err(read(gpu, qb, (t, hq, d)), want_q) < 1e-5
    assert rel_err(kv[0][:, pos0:pos0 + t].transpose(1, 0, 2), want_k) < 1e-5
    assert rel_err(kv[1][:, pos0:pos0 + t].transpose(1, 0, 2), want_v) < 1e-6
    assert not kv[:, :, :pos0].any() and not kv[:, :, pos0 + t:].any()
    # the rows as 3 parts of a split-K matmul's sums, rows t * 3 ..
    parts = (rng.standard_normal((t, 3, x.shape[1])) * 2).astype(np.float32)
    parts[:, 2] = x - parts[:, 0] - parts[:, 1]
    qb3, kvb3 = gpu.buffer(t * qd * 4), gpu.buffer(2 * kvd * ctx * 4)
    run_kernel(gpu, qk_norm_kernel(shape, eps, q_off, k_off, 0, partials=3),
               {**bufs, "x": gpu.upload(parts), "q": qb3, "kv": kvb3}, qk_norm_grid(shape)(t), n=t, pos=pos0)
    kv3 = read(gpu, kvb3, (2, hkv, ctx, d))
    assert rel_err(read(gpu, qb3, (t, hq, d)), want_q) < 1e-4
    assert rel_err(kv3[0][:, pos0:pos0 + t].transpose(1, 0, 2), want_k) < 1e-4
    assert rel_err(kv3[1][:, pos0:pos0 + t].transpose(1, 0, 2), want_v) < 1e-5
    # batched: row i at slot i % 2, position 3 + 7 i; slot 0's pages 2, 0, slot 1's 1, 3
    slots = Slots(2, ctx, pages=4)
    table = np.array([(3 + 7 * i, i % 2) for i in range(t)], np.uint32)
    pages = np.array([[2, 0], [1, 3]], np.uint32)
    kvs = gpu.buffer(4 * 2 * kvd * PAGE * 4)
    run_kernel(gpu, qk_norm_kernel(shape, eps, q_off, k_off, 0, slots),
               {**bufs, "kv": kvs, "rows": gpu.upload(table), "pages": gpu.upload(pages)}, qk_norm_grid(shape)(t), n=t)
    kv2 = read(gpu, kvs, (4, 2, hkv, PAGE, d))
    want_q2 = rope_pairs(qh, table[:, 0].astype(np.float64), inv)
    want_k2 = rope_pairs(kh, table[:, 0].astype(np.float64), inv)
    assert rel_err(read(gpu, qb, (t, hq, d)), want_q2) < 1e-5
    for i, (p, s) in enumerate(table):
        pg = pages[s, p // PAGE]
        assert rel_err(kv2[pg, 0][:, p % PAGE], want_k2[i]) < 1e-5
        assert rel_err(kv2[pg, 1][:, p % PAGE], want_v[i]) < 1e-6


@pytest.mark.parametrize("partials, nxt", [(1, False), (3, True), (1, True)])
def test_post_norm_adds_the_normed_output(gpu, partials, nxt):
    """Gemma's residual add: h += rmsnorm(sum of the output's partials) * w, and optionally the
    next norm of the new h into y."""
    rng = np.random.default_rng(27)
    k, t, eps = 76, 3, 1e-6
    h = rng.standard_normal((t, k)).astype(np.float32)
    part = rng.standard_normal((t, partials, k)).astype(np.float32)
    w_post, w_next = (1 + 0.3 * rng.standard_normal((2, k))).astype(np.float32)
    pv = np.concatenate([np.zeros(4, np.float32), w_post, w_next])
    hb, y = gpu.upload(h), gpu.buffer(t * k * 4)
    bufs = {"x": hb, "part": gpu.upload(part), "pv": gpu.upload(pv), "y": y}
    run_kernel(gpu, post_norm_kernel(k, eps, 4, partials, 4 + k if nxt else None), bufs, (t, 1, 1), n=t)
    want = h + rms_norm(part.sum(1), w_post, eps)
    assert rel_err(read(gpu, hb, (t, k)), want) < 1e-5
    if nxt:
        assert rel_err(read(gpu, y, (t, k)), rms_norm(want, w_next, eps)) < 1e-5


@pytest.mark.parametrize("cap", [0, 1])
def test_attention_sinks_prompt_and_decode(gpu, cap):
    """gpt-oss's sinks (a logit per head, read from the parameter buffer, in the softmax's
    denominator): the prompt kernel with a window, and split-K decode merged by the combine
    kernel and by the O projection's prologue (`cap` 1: one split for all the keys)."""
    rng = np.random.default_rng(26)
    hq, hkv, d, ctx, t, pos0, off = 4, 2, 16, 64, 21, 5, 8
    sinks = rng.standard_normal(hq).astype(np.float32) * 2
    pv = gpu.upload(np.concatenate([np.zeros(off, np.float32), sinks]))
    kv = np.zeros((2, hkv, ctx, d), np.float32)
    kv[:, :, :pos0 + t] = rng.standard_normal((2, hkv, pos0 + t, d))
    k_, v_ = kv[0].transpose(1, 0, 2)[:pos0 + t], kv[1].transpose(1, 0, 2)[:pos0 + t]
    q = rng.standard_normal((t, hq, d)).astype(np.float32)
    spec = att.AttentionSpec(hq, hkv, d, ctx, 16, window=9, sinks=off)
    out = gpu.buffer(t * hq * d * 4)
    run_kernel(gpu, att.prompt_attention_kernel(spec), {"q": gpu.upload(q), "kv": gpu.upload(kv), "out": out, "pv": pv},
               att.prompt_attention_grid(spec)(t), n=t, pos=pos0)
    assert rel_err(read(gpu, out, (t, hq, d)), attention_ref(q, k_, v_, pos0, 9, sinks=sinks)) < 1e-5
    # decode: the last query alone, over 26 keys in two splits
    pos = pos0 + t - 1
    spec = att.AttentionSpec(hq, hkv, d, ctx, 16, sinks=off, cap=cap)
    ml, acc = gpu.buffer(hq * spec.max_splits * 8), gpu.buffer(hq * spec.max_splits * d * 4)
    st = gpu.upload(pack_state(pos=pos, n=1))
    bufs = {"st": st, "q": gpu.upload(q[-1:]), "kv": gpu.upload(kv), "ml": ml, "acc": acc, "pv": pv}
    want = attention_ref(q[-1:], k_, v_, pos, sinks=sinks)
    rows = 11
    w = rng.standard_normal((rows, hq * d)).astype(np.float32)
    for at_once in (False, True):  # (O's merge in one pass: the sinks start each word's running max)
        ashape = spec.shape(unroll=4, at_once=at_once)
        o_spec = LinearSpec(k=hq * d, segments=(Segment("f32", rows),), prologue="attn", attn=ashape)
        y, yo = gpu.buffer(hq * d * 4), gpu.buffer(rows * 4)
        prog = Program(gpu)
        prog.add(att.attention_kernel(spec), bufs, att.attention_grid(spec))
        prog.add(combine_kernel(ashape), {**bufs, "y": y}, ew_grid(hq * d // 4))
        prog.add(matvec_kernel(o_spec, wg=32, tpr=8), {**bufs, "w0": gpu.upload(w), "y": yo}, matvec_grid(o_spec, 32, 8))
        prog.run()
        assert rel_err(read(gpu, y, (1, hq, d)), want) < 1e-5
        assert rel_err(read(gpu, yo, rows), w @ want.reshape(-1)) < 1e-5, at_once
