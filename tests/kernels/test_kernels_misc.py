"""Attention, embedding, RMSNorm, NLL and the sampler against numpy, on odd sizes."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_harness import read, rel_err, run_kernel

from reference import attention, dequantize, reference_distribution, rms_norm
from webgpu_llm.engine.sampling import SamplingParams
from webgpu_llm.kernels import attention as att
from webgpu_llm.kernels import sampling
from webgpu_llm.kernels.common import grid_2d, pack_state
from webgpu_llm.kernels.elementwise import combine_kernel
from webgpu_llm.kernels.elementwise import grid as ew_grid
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.kernels.linear import LinearSpec, Segment
from webgpu_llm.kernels.loss import nll_kernel
from webgpu_llm.kernels.rows import embed_kernel, rmsnorm_kernel
from webgpu_llm.kernels.strided import grid_1d, grid_rows
from webgpu_llm.models.presets import random_weight
from webgpu_llm.runtime.program import Program


def _kv(rng, hkv, ctx, d, filled, f16=False):
    """A K|V cache with `filled` positions, its values representable in f16 where `f16`."""
    kv = np.zeros((2, hkv, ctx, d), np.float32)
    kv[:, :, :filled] = rng.standard_normal((2, hkv, filled, d))
    return kv.astype(np.float16).astype(np.float32) if f16 else kv


def _cache(kv, f16):
    """The cache's bytes as the kernels read them: f32s, or f16s (AttentionSpec.kv_f16)."""
    return kv.astype(np.float16) if f16 else kv


@pytest.mark.parametrize("d, t, pos0, f16", [(24, 7, 70, False), (36, 37, 5, False), (128, 17, 20, False),
                                             (36, 37, 5, True), (128, 17, 20, True)])
def test_prompt_attention_causal_gqa(gpu, d, t, pos0, f16):
    """Query blocks of 16 tokens; key chunks straddling the end; head dims that are not a
    multiple of the 8 lanes per query, and a wide one (chunks of 16 keys); f32 and f16 caches."""
    rng = np.random.default_rng(10)
    hq, hkv, ctx = 6, 2, 90
    kv = _kv(rng, hkv, ctx, d, pos0 + t, f16)
    q = rng.standard_normal((t, hq, d)).astype(np.float32)
    spec = att.AttentionSpec(hq, hkv, d, ctx, kv_f16=f16)
    out = gpu.buffer(t * hq * d * 4)
    run_kernel(gpu, att.prompt_attention_kernel(spec), {"q": gpu.upload(q), "kv": gpu.upload(_cache(kv, f16)), "out": out},
               att.prompt_attention_grid(spec)(t), n=t, pos=pos0)
    k = kv[0].transpose(1, 0, 2)[: pos0 + t]
    v = kv[1].transpose(1, 0, 2)[: pos0 + t]
    assert rel_err(read(gpu, out, (t, hq, d)), attention(q, k, v, pos0)) < 1e-5


@pytest.mark.parametrize("sub,wg,d,f16,chunk,cap", [(False, 0, 16, False, 16, 0), (True, 0, 16, False, 16, 0),
                                                    (False, 64, 16, False, 16, 0), (True, 64, 16, False, 16, 0),
                                                    (True, 128, 8, False, 16, 0), (False, 64, 20, False, 16, 0),
                                                    (True, 32, 20, True, 16, 0), (False, 0, 16, True, 16, 0),
                                                    (True, 64, 8, True, 16, 0), (False, 0, 144, False, 16, 0),
                                                    (True, 32, 144, True, 16, 0), (False, 0, 16, False, 4, 0),
                                                    (True, 16, 8, True, 8, 0), (False, 0, 16, False, 4, 3),
                                                    (True, 64, 16, True, 16, 2), (True, 16, 8, False, 8, 4),
                                                    (False, 64, 20, False, 4, 1)])
@pytest.mark.parametrize("preload", [False, True])
def test_decode_split_attention_and_combine(gpu, sub, wg, d, f16, chunk, cap, preload):
    """Split-K decode attention and its merge: keys read whole by a thread each, or by 2-8
    threads each (the last thread's words fewer where they do not divide the head); heads
    longer than the chunk's keys (the workgroup sized to the head); f32 and f16 caches; 4, 7
    and 14 splits (the merge loads four a pass, the last pass partial); with the splits capped
    (AttentionSpec.cap), each taking several chunks: 3 splits of 5 chunks of 4 keys (the last
    short), 2 of 2, 4 of 2 (the last one chunk), all of them in one. With `preload`, each
    split's first chunk of keys and values loaded before the scores, the rest as they come."""
    rng = np.random.default_rng(11)
    hq, hkv, ctx, pos = 4, 2, 100, 52  # 53 keys -> 53 / chunk splits, the last partial
    kv = _kv(rng, hkv, ctx, d, pos + 1, f16)
    q = rng.standard_normal((1, hq, d)).astype(np.float32)
    spec = att.AttentionSpec(hq, hkv, d, ctx, chunk, wg, kv_f16=f16, cap=cap, preload=preload)
    assert spec.max_splits == (cap or -(-ctx // chunk)) and spec.capped == bool(cap)
    ml, acc = gpu.buffer(hq * spec.max_splits * 8), gpu.buffer(hq * spec.max_splits * d * 4)
    bufs = {"q": gpu.upload(q), "kv": gpu.upload(_cache(kv, f16)), "ml": ml, "acc": acc}
    sg = gpu.subgroups_wgsl(on_cpu=True) if sub else None
    st = gpu.upload(pack_state(pos=pos, n=1))
    prog = Program(gpu)
    prog.add(att.attention_kernel(spec, sg), {"st": st, **bufs}, att.attention_grid(spec))
    y = gpu.buffer(hq * d * 4)
    prog.add(combine_kernel(spec.shape(unroll=1 + 3 * (chunk < 16))), {"st": st, **bufs, "y": y},
             ew_grid(hq * d // 4))
    prog.run()
    k = kv[0].transpose(1, 0, 2)[: pos + 1]
    v = kv[1].transpose(1, 0, 2)[: pos + 1]
    assert rel_err(read(gpu, y, (1, hq, d)), attention(q, k, v, pos)) < 1e-5


@pytest.mark.parametrize("fmt", ["q8_0", "f16"])
def test_embedding_lookup(gpu, fmt):
    rng = np.random.default_rng(12)
    vocab, k, t = 53, 96 if fmt == "q8_0" else 72, 5
    raw = random_weight(fmt, vocab, k, rng)
    table = dequantize(fmt, raw, k)
    toks = np.array([0, 0, 0, 7, 52, 3, 11, 9], np.uint32)  # batch starts at position 3
    x = gpu.buffer(t * k * 4)
    spec = LinearSpec(k=k, segments=(Segment(fmt, vocab),))
    run_kernel(gpu, embed_kernel(spec), {"w0": gpu.upload(FORMATS[fmt].pack(raw, k)), "tokens": gpu.upload(toks),
                                         "x": x}, (t, 1, 1), n=t, pos=3)
    assert rel_err(read(gpu, x, (t, k)), table[toks[3:8]]) < 1e-6


def test_rmsnorm_rows(gpu):
    rng = np.random.default_rng(13)
    k, t = 76, 3
    x = rng.standard_normal((t, k)).astype(np.float32)
    w = rng.standard_normal(k).astype(np.float32)
    y = gpu.buffer(t * k * 4)
    run_kernel(gpu, rmsnorm_kernel(k, 1e-5, 4), {"x": gpu.upload(x), "pv": gpu.upload(np.r_[np.zeros(4), w].astype(np.float32)),
                                                 "y": y}, (t, 1, 1), n=t)
    assert rel_err(read(gpu, y, (t, k)), rms_norm(x, w, 1e-5)) < 1e-5


def test_rmsnorm_rows_as_f16(gpu):
    """y_f16: the normed rows as f16s (for the f16 tiles), values past f16's range clamped."""
    rng = np.random.default_rng(14)
    k, t = 88, 3
    x = rng.standard_normal((t, k)).astype(np.float32)
    w = rng.standard_normal(k).astype(np.float32)
    w[5] = 1e6  # past f16's range after the norm
    y = gpu.buffer(t * k * 2)
    run_kernel(gpu, rmsnorm_kernel(k, 1e-5, 4, y_f16=True),
               {"x": gpu.upload(x), "pv": gpu.upload(np.r_[np.zeros(4), w].astype(np.float32)), "y": y}, (t, 1, 1), n=t)
    want = np.clip(rms_norm(x, w, 1e-5), -65504, 65504).astype(np.float16).astype(np.float32)
    got = read(gpu, y, (t, k), np.float16).astype(np.float32)
    assert (np.abs(got[:, 5]) == 65504).all() and (got[:, 5] == want[:, 5]).all()
    rest = np.arange(k) != 5
    assert rel_err(got[:, rest], want[:, rest]) < 1e-3


def test_rmsnorm_rows_as_f32_and_f16(gpu):
    """also_f16: the normed rows as f32s in y (a mixture's router) and as f16s in y16 (its
    experts' f16 tiles), the f16s the f32s rounded and clamped."""
    rng = np.random.default_rng(15)
    k, t = 104, 5
    x = rng.standard_normal((t, k)).astype(np.float32)
    w = rng.standard_normal(k).astype(np.float32)
    w[7] = 1e6
    y, y16 = gpu.buffer(t * k * 4), gpu.buffer(t * k * 2)
    run_kernel(gpu, rmsnorm_kernel(k, 1e-5, 4, also_f16=True),
               {"x": gpu.upload(x), "pv": gpu.upload(np.r_[np.zeros(4), w].astype(np.float32)), "y": y, "y16": y16},
               (t, 1, 1), n=t)
    got = read(gpu, y, (t, k))
    assert rel_err(got, rms_norm(x, w, 1e-5)) < 1e-5
    got16 = read(gpu, y16, (t, k), np.float16).astype(np.float32)
    assert (np.abs(got16[:, 7]) == 65504).all()
    rest = np.arange(k) != 7
    assert rel_err(got16[:, rest], got[:, rest]) < 1e-3  # (pack2x16float's rounding is the device's)


def test_profile_by_label_sums_dispatches_of_a_kernel(gpu):
    if not gpu.has_timestamps:
        pytest.skip("no timestamp queries on this adapter")
    k, t = 76, 3
    st = gpu.upload(pack_state(n=t))
    bufs = {"st": st, "x": gpu.upload(np.ones((t, k), np.float32)), "pv": gpu.upload(np.ones(k + 4, np.float32)),
            "y": gpu.buffer(t * k * 4)}
    prog = Program(gpu)
    for label in ("a", "b", "a"):
        prog.add(rmsnorm_kernel(k, 1e-5, 4), bufs, (t, 1, 1), label=label)
    rows = prog.profile_by_label(t)
    assert sorted(r["kernel"] for r in rows) == ["a", "b"]
    assert {r["kernel"]: r["count"] for r in rows} == {"a": 2, "b": 1}
    assert {r["kernel"]: r["workgroups"] for r in rows} == {"a": t, "b": t}
    # Dawn may quantize timestamps (coarser than this tiny kernel), so a dispatch can read 0.
    assert all(r["us"] >= 0 for r in rows) and rows == sorted(rows, key=lambda r: -r["us"])


def test_read_backs_of_submissions_still_in_flight(gpu):
    """`ReadBack`: each of several submits (a kernel, then a copy of its output into a MAP_READ
    buffer) is read back in order while later ones are queued behind it, each with what its own
    submission wrote (on wgpu-native the map starts once that submission is done)."""
    from webgpu_llm.runtime.gpu import ReadBack
    from webgpu_llm.runtime.program import run_programs

    k, t = 68, 2
    st = gpu.upload(pack_state(n=t))
    x = gpu.buffer(t * k * 4)
    y = gpu.buffer(t * k * 4)
    prog = Program(gpu)
    prog.add(rmsnorm_kernel(k, 1e-5, 4), {"st": st, "x": x, "pv": gpu.upload(np.ones(k + 4, np.float32)), "y": y},
             (t, 1, 1))
    rng = np.random.default_rng(3)
    xs = [rng.standard_normal((t, k)).astype(np.float32) for _ in range(5)]
    pending = []
    for xi in xs:
        gpu.write(x, xi)
        dst = gpu.device.create_buffer(size=t * k * 4, usage=gpu.usage.MAP_READ | gpu.usage.COPY_DST)
        index = run_programs(gpu, [(prog, t)], after=lambda enc, dst=dst: enc.copy_buffer_to_buffer(y, 0, dst, 0, t * k * 4))
        assert (index is None) == (gpu.backend != "wgpu")  # wgpu-native numbers its submissions
        pending.append(ReadBack(gpu, dst, index))
    for xi, rb in zip(xs, pending):
        got = np.frombuffer(rb.wait().read_mapped(0, t * k * 4), np.float32).reshape(t, k)
        rb.buf.unmap()
        assert rel_err(got, rms_norm(xi, np.ones(k, np.float32), 1e-5)) < 1e-5


def test_rmsnorm_adds_split_partials_first(gpu):
    """The residual add a split-K matmul leaves to the next row kernel: x += sum of partials,
    written back, then normalized (or, with norm=False, only added)."""
    rng = np.random.default_rng(15)
    k, t, s = 76, 3, 3
    x = rng.standard_normal((t, k)).astype(np.float32)
    part = rng.standard_normal((t, s, k)).astype(np.float32)
    w = rng.standard_normal(k).astype(np.float32)
    xb, y = gpu.upload(x), gpu.buffer(t * k * 4)
    run_kernel(gpu, rmsnorm_kernel(k, 1e-5, 0, partials=s), {"x": xb, "part": gpu.upload(part), "pv": gpu.upload(w),
                                                           "y": y}, (t, 1, 1), n=t)
    h = x + part.sum(1)
    assert rel_err(read(gpu, xb, (t, k)), h) < 1e-6
    assert rel_err(read(gpu, y, (t, k)), rms_norm(h, w, 1e-5)) < 1e-5
    run_kernel(gpu, rmsnorm_kernel(k, 1e-5, partials=s, norm=False), {"x": xb, "part": gpu.upload(part)}, (t, 1, 1), n=t)
    assert rel_err(read(gpu, xb, (t, k)), h + part.sum(1)) < 1e-6


def test_nll_of_next_tokens(gpu):
    rng = np.random.default_rng(14)
    vocab, rows, t0 = 1001, 6, 4
    logits = (rng.standard_normal((rows, vocab)) * 3).astype(np.float32)
    toks = rng.integers(0, vocab, 16).astype(np.uint32)
    nll = gpu.buffer(64 * 4)
    # batch of 9 tokens at position 2; the scored text ends at 11, so the last row has no target
    run_kernel(gpu, nll_kernel(vocab, t0), {"logits": gpu.upload(logits), "tokens": gpu.upload(toks), "nll": nll},
               (rows, 1, 1), n=9, pos=2, limit=11)
    got = read(gpu, nll, 64)
    lse = np.log(np.exp(logits.astype(np.float64)).sum(1))
    for r in range(rows):
        tgt = toks[2 + t0 + r + 1] if 2 + t0 + r + 1 < 11 else None
        if tgt is None or t0 + r >= 9:
            assert got[t0 + r] == 0.0
        else:
            assert got[t0 + r] == pytest.approx(lse[r] - logits[r, tgt], rel=1e-5, abs=1e-5)


def _history(params: SamplingParams, n: int, vocab: int) -> np.ndarray:
    """Distinct tokens, or with the additive penalties a few tokens again and again (counts > 1)."""
    additive = params.frequency_penalty or params.presence_penalty
    return (np.arange(n) % (7 if additive else vocab)).astype(np.uint32)


def _sample_program(gpu, logits, params, n_hist_tokens):
    vocab = logits.shape[0]
    filt = params.filtered
    nwg = sampling.scan_workgroups(vocab)
    bufs = {"logits": gpu.upload(logits), "part": gpu.buffer(nwg * 8), "cand": gpu.buffer(nwg * sampling.CAND * 8),
            "stats": gpu.buffer(nwg * 8), "tokens": gpu.upload(_history(params, n_hist_tokens + 4, vocab)),
            "st": gpu.buffer(64)}
    prog = Program(gpu)
    if params.penalised:
        prog.add(sampling.penalty_kernel(vocab), bufs, (1, 1, 1))
    prog.add(sampling.scan_kernel(vocab, filt), bufs, (nwg, 1, 1))
    prog.add(sampling.pick_kernel(vocab, filt), bufs, (1, 1, 1))
    return prog, bufs


def test_greedy_sampler_picks_argmax_and_advances(gpu):
    rng = np.random.default_rng(15)
    logits = rng.standard_normal(5003).astype(np.float32)
    logits[4321] = 9.0
    prog, b = _sample_program(gpu, logits, SamplingParams(), 3)
    gpu.write(b["st"], SamplingParams().state(pos=1, n=2, seed=0))
    prog.run()
    assert int(read(gpu, b["tokens"], 4, np.uint32)[3]) == 4321
    st = read(gpu, b["st"], 16, np.uint32)
    assert (st[0], st[1]) == (3, 1)  # pos advanced by the batch, next batch is one token


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0.8, top_k=0, top_p=1.0, min_p=0.0),  # Gumbel fast path
    SamplingParams(temperature=0.7, top_k=20, top_p=0.9, min_p=0.02),
    SamplingParams(temperature=1.3, top_k=0, top_p=0.8, min_p=0.0),
    SamplingParams(temperature=1.0, top_k=8, top_p=1.0, min_p=0.0, repeat_penalty=1.5, repeat_last_n=16),
    SamplingParams(temperature=1.0, top_k=12, top_p=1.0, min_p=0.0, repeat_penalty=1.2, repeat_last_n=16,
                   frequency_penalty=0.5, presence_penalty=0.7),
])
def test_sampler_distribution_matches_numpy(wgpu_gpu, params):
    """Many seeded draws on fixed logits: the empirical distribution matches the reference
    chain's exact probabilities. Compared over bins (the 30 most likely tokens, one each, and
    the rest together) so that sampling noise on thousands of rare tokens does not dominate:
    the total variation must stay below a bound that 3000 draws meet."""
    gpu = wgpu_gpu
    rng = np.random.default_rng(16)
    vocab = 2500
    logits = (rng.standard_normal(vocab) * 1.5).astype(np.float32)
    logits[:12] += np.linspace(4, 2, 12).astype(np.float32)  # a head of likely tokens
    hist = 20
    draws = 3000
    counts = np.zeros(vocab)
    if params.penalised:  # each draw from the same history: one submit per draw
        prog, b = _sample_program(gpu, logits, params, hist)
        toks = []
        for i in range(draws):
            gpu.write(b["st"], params.state(pos=hist - 1, n=1, seed=1234, n_gen=i))
            gpu.write(b["logits"], logits)
            prog.run()
            toks.append(int(read(gpu, b["tokens"], hist + 1, np.uint32)[hist]))
    else:  # the sampler advances the position and the draw counter itself: 100 draws a submit
        prog, b = _sample_program(gpu, logits, params, hist + draws)
        rep = Program(gpu)
        for _ in range(100):
            rep.extend(prog)
        gpu.write(b["st"], params.state(pos=hist - 1, n=1, seed=1234))
        for _ in range(draws // 100):
            rep.run()
        toks = read(gpu, b["tokens"], hist + draws + 4, np.uint32)[hist:hist + draws].astype(np.int64)
    np.add.at(counts, toks, 1)
    ref = reference_distribution(logits, params, history=_history(params, hist, vocab).tolist())
    top = np.argsort(-ref)[:30]
    rest = np.setdiff1d(np.arange(vocab), top)
    emp = np.r_[counts[top], counts[rest].sum()] / draws
    exp = np.r_[ref[top], ref[rest].sum()]
    tv = 0.5 * np.abs(emp - exp).sum()
    assert tv < 0.05, (tv, emp[:5], exp[:5])
    assert counts[ref == 0].sum() == 0  # never a filtered-out token


def test_grids_stay_within_the_dimension_limit_and_cover_every_workgroup():
    """One grid layout for the engine's and the strided kernels: x * y workgroups, at least the
    count asked for, fewer than one row of x more, each dimension within 65535."""
    for n in (1, 7, 65535, 65536, 131071, 1 << 20, 3 * 65535 + 2):
        for gx, gy, gz in (grid_2d(n), grid_rows(n), grid_1d(n * 256 - 3)):
            assert gz == 1 and gx <= 65535 and gy <= 65535
            assert n <= gx * gy < n + gx
    assert grid_1d(0) == (1, 1, 1)
