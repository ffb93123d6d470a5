"""The kernels of a batched step (several sequences in one step) against numpy: the thin
matmul of a few tokens, and the row-table variants of the embedding, the QKV epilogue, the
prompt attention and the sampler."""

from __future__ import annotations

import numpy as np
import pytest
from kernel_harness import read, rel_err, run_kernel

from reference import attention, dequantize, rope_pairs, silu
from webgpu_llm.kernels import sampling
from webgpu_llm.kernels.attention import AttentionSpec, prompt_attention_kernel
from webgpu_llm.kernels.common import PAGE, STATE_WORDS, Slots, pack_state
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.kernels.linear import LinearSpec, QkvShape, Segment, thin_matmul_grid, thin_matmul_kernel
from webgpu_llm.models.presets import random_weight
from webgpu_llm.runtime.program import Program


def _weight(gpu, fmt, rows, k, rng):
    raw = random_weight(fmt, rows, k, rng)
    return dequantize(fmt, raw, k), gpu.upload(FORMATS[fmt].pack(raw, k))


@pytest.mark.parametrize("fmt,k,wg,tpr,tokens", [("f32", 72, 64, 1, 4), ("f32", 72, 128, 32, 3), ("f16", 96, 64, 16, 8),
                                                 ("q8_0", 96, 64, 1, 4), ("q4_k", 256, 128, 32, 3)])
def test_thin_matmul_store_add_silu(gpu, fmt, k, wg, tpr, tokens):
    """Up to `tokens` rows a pass and several passes (grid z) of 11 rows; 37 output rows (an
    odd last pair); the store, residual-add and SiLU·mul epilogues."""
    rng = np.random.default_rng(3)
    n, rows = 11, 37
    w, wb = _weight(gpu, fmt, rows, k, rng)
    x = rng.standard_normal((n, k)).astype(np.float32)
    xb = gpu.upload(x)
    spec = LinearSpec(k=k, segments=(Segment(fmt, rows),))
    yb = gpu.buffer(n * rows * 4)
    sg = gpu.subgroups_wgsl(on_cpu=True)
    run_kernel(gpu, thin_matmul_kernel(spec, tokens, wg, tpr, sg), {"w0": wb, "x": xb, "y": yb},
               thin_matmul_grid(spec, tokens, wg, tpr)(n), n=n)
    assert rel_err(read(gpu, yb, (n, rows)), x @ w.T) < 1e-5
    res = rng.standard_normal((n, rows)).astype(np.float32)
    yb = gpu.upload(res)
    add = LinearSpec(k=k, segments=(Segment(fmt, rows),), epilogue="add")
    run_kernel(gpu, thin_matmul_kernel(add, tokens, wg, tpr, sg), {"w0": wb, "x": xb, "y": yb},
               thin_matmul_grid(add, tokens, wg, tpr)(n), n=n)
    assert rel_err(read(gpu, yb, (n, rows)), res + x @ w.T) < 1e-5
    gu = LinearSpec(k=k, segments=(Segment(fmt, rows - 1),), epilogue="silu_mul")
    w2, wb2 = _weight(gpu, fmt, rows - 1, k, rng)
    yb = gpu.buffer(n * (rows - 1) // 2 * 4)
    run_kernel(gpu, thin_matmul_kernel(gu, tokens, wg, tpr, sg), {"w0": wb2, "x": xb, "y": yb},
               thin_matmul_grid(gu, tokens, wg, tpr)(n), n=n)
    h = (rows - 1) // 2
    ref = silu(x @ w2[:h].T) * (x @ w2[h:].T)
    assert rel_err(read(gpu, yb, (n, h)), ref) < 1e-5


def test_qkv_epilogue_and_attention_of_a_batched_step(gpu):
    """Three sequences in slots 2, 0 and 1, their KV caches in pages of a shared pool, listed
    out of order in the page table: one decodes a token at position 17 (its second page), one
    prefills rows at positions 0..20 (blocks of up to 16 rows, across a page boundary), one
    decodes at position 2. The QKV epilogue rotates each row at its own position into its own
    page, and the attention of each row reads its own sequence's keys up to its position."""
    rng = np.random.default_rng(5)
    heads, kv_heads, d, ctx, hidden = 4, 2, 8, 40, 24
    table = {0: [5, 2], 1: [7], 2: [0, 3]}  # each slot's pages in position order
    slots = Slots(3, ctx, pages=8)
    pt = np.zeros((3, slots.max_pages), np.uint32)
    for sl, pgs in table.items():
        pt[sl, :len(pgs)] = pgs
    q_rows, kv_rows = heads * d, kv_heads * d
    w, wb = _weight(gpu, "f32", q_rows + 2 * kv_rows, hidden, rng)
    inv = (1.0 / 10000 ** (np.arange(0, d, 2) / d)).astype(np.float32)
    pv = np.zeros(4 + hidden + d // 2 + 4, np.float32)
    rope_off = 4 * ((hidden + 3) // 4)
    pv[rope_off: rope_off + d // 2] = inv
    # what is already cached: random keys and values in every page
    pool = rng.standard_normal((8, 2, kv_heads, PAGE, d)).astype(np.float32)
    seqs = [(2, [17]), (0, list(range(21))), (1, [2])]  # (slot, positions of its rows)
    rows = [(p, s) for s, ps in seqs for p in ps]
    n = len(rows)
    x = rng.standard_normal((n, hidden)).astype(np.float32)
    spec = LinearSpec(k=hidden, segments=(Segment("f32", w.shape[0]),), epilogue="qkv",
                      qkv=QkvShape(q_rows, kv_rows, d, ctx), rope_off=rope_off, slots=slots)
    qb, kvb, pb = gpu.buffer(n * q_rows * 4), gpu.upload(pool), gpu.upload(pt)
    rb = gpu.upload(np.asarray(rows, np.uint32))
    grid = thin_matmul_grid(spec, 4, 64, 8)(n)
    run_kernel(gpu, thin_matmul_kernel(spec, 4, 64, 8), {"w0": wb, "x": gpu.upload(x), "q": qb, "kv": kvb,
                                                         "pv": gpu.upload(pv), "rows": rb, "pages": pb}, grid, n=n)
    y = x @ w.T
    pos = np.array([p for p, _ in rows])
    want_q = rope_pairs(y[:, :q_rows].reshape(n, heads, d), pos, inv).reshape(n, q_rows)
    want = pool.copy()
    k_new = rope_pairs(y[:, q_rows:q_rows + kv_rows].reshape(n, kv_heads, d), pos, inv)
    v_new = y[:, q_rows + kv_rows:].reshape(n, kv_heads, d)
    for i, (p, s) in enumerate(rows):
        want[table[s][p // PAGE], 0, :, p % PAGE] = k_new[i]
        want[table[s][p // PAGE], 1, :, p % PAGE] = v_new[i]
    assert rel_err(read(gpu, qb, (n, q_rows)), want_q) < 1e-5
    assert rel_err(read(gpu, kvb, want.shape), want) < 1e-5
    # attention: blocks (first row, rows, slot, first position); the prefill split in 16s
    blocks, r = [], 0
    for s, ps in seqs:
        for b0 in range(0, len(ps), 16):
            blocks.append((r + b0, min(16, len(ps) - b0), s, ps[b0]))
        r += len(ps)
    a = AttentionSpec(heads, kv_heads, d, ctx)
    ob = gpu.buffer(n * q_rows * 4)
    prog_st = gpu.upload(pack_state(n=n))
    prog = Program(gpu, "attn")
    prog.add(prompt_attention_kernel(a, slots), {"st": prog_st, "blocks": gpu.upload(np.asarray(blocks, np.uint32)),
                                                 "q": qb, "kv": kvb, "out": ob, "pages": pb}, (heads, len(blocks), 1))
    prog.run()
    got = read(gpu, ob, (n, heads, d))
    qn = want_q.reshape(n, heads, d)
    for i, (p, s) in enumerate(rows):
        cache = np.concatenate([want[pg] for pg in table[s]], axis=2)  # (2, kv_heads, positions, d)
        keys, values = (cache[j, :, : p + 1].transpose(1, 0, 2) for j in (0, 1))
        ref = attention(qn[i:i + 1], keys, values, p)
        assert rel_err(got[i], ref.reshape(heads, d)) < 1e-5, i


@pytest.mark.parametrize("temperature,top_k", [(0.0, 40), (0.8, 0), (0.8, 20)])
def test_batched_sampler_takes_each_slots_settings(gpu, temperature, top_k):
    """Three sampled rows in slots 1, 0 and 2, each with its own settings and seed: each draws
    what the one-sequence sampler draws with those settings on those logits, writes it after
    its position in its slot's history and to `sampled`, and counts the draw in its slot."""
    from webgpu_llm.engine.sampling import SamplingParams

    rng = np.random.default_rng(11)
    vocab, slots = 3000, Slots(3, 32)
    logits = (rng.standard_normal((3, vocab)) * 3).astype(np.float32)
    params = [SamplingParams(temperature, top_k, 0.9, 0.05, seed=s) for s in (5, 6, 7)]
    samples = [(0, 1, 4), (1, 0, 9), (2, 2, 0)]  # (row, slot, position)
    states = np.zeros((3, STATE_WORDS), np.uint32)
    for (_, s, _), p in zip(samples, params):
        states[s] = p.state(0, 0, p.resolved_seed(), n_gen=3)
    filtered = any(p.filtered for p in params)
    nwg = sampling.scan_workgroups(vocab)
    b = {"samples": gpu.upload(np.asarray([(*x, 0) for x in samples], np.uint32)), "slots": gpu.upload(states),
         "tokens": gpu.buffer(3 * slots.token_stride * 4), "logits": gpu.upload(logits),
         "part": gpu.buffer(3 * nwg * 8), "cand": gpu.buffer(3 * nwg * sampling.CAND * 8),
         "stats": gpu.buffer(3 * nwg * 8), "sampled": gpu.buffer(16), "st": gpu.upload(pack_state(n=3))}
    prog = Program(gpu, "sampler")
    prog.add(sampling.scan_kernel(vocab, False, slots), b, (nwg, 3, 1))
    if filtered:
        prog.add(sampling.scan_kernel(vocab, True, slots), b, (nwg, 3, 1))
    prog.add(sampling.pick_kernel(vocab, filtered, slots), b, (3, 1, 1))
    prog.run()
    got = read(gpu, b["sampled"], 3, np.uint32)
    hist = read(gpu, b["tokens"], (3, slots.token_stride), np.uint32)
    counts = read(gpu, b["slots"], (3, STATE_WORDS), np.uint32)[:, 9]
    for j, ((_, s, pos), p) in enumerate(zip(samples, params)):
        # the one-sequence sampler on the same logits and state
        one = {"logits": gpu.upload(logits[j]), "part": gpu.buffer(nwg * 8), "cand": gpu.buffer(nwg * sampling.CAND * 8),
               "stats": gpu.buffer(nwg * 8), "tokens": gpu.buffer(64), "st": gpu.upload(p.state(0, 1, p.resolved_seed(), n_gen=3))}
        single = Program(gpu, "one")
        single.add(sampling.scan_kernel(vocab, p.filtered), one, (nwg, 1, 1))
        single.add(sampling.pick_kernel(vocab, p.filtered), one, (1, 1, 1))
        single.run()
        want = int(read(gpu, one["tokens"], 2, np.uint32)[1])
        assert int(got[j]) == want and int(hist[s, pos + 1]) == want
        assert counts[s] == 4


@pytest.mark.parametrize("n", [1, 7, 70])
def test_advance_moves_a_decode_steps_tables_one_position_on(gpu, n):
    """sampling.advance_kernel: the first st.n rows, their blocks and samples one position on
    (row x, block w, sample z), the rest of each table and the other fields untouched, and a
    one-row step's st.pos with them."""
    rng = np.random.default_rng(n)
    cap = n + 5
    rows = rng.integers(0, 1000, (cap, 2)).astype(np.uint32)
    blocks = rng.integers(0, 1000, (cap, 4)).astype(np.uint32)
    samples = rng.integers(0, 1000, (cap, 4)).astype(np.uint32)
    st = gpu.upload(pack_state(n=n, pos=41))
    bufs = {"rows": gpu.upload(rows), "blocks": gpu.upload(blocks), "samples": gpu.upload(samples)}
    prog = Program(gpu, "advance")
    prog.add(sampling.advance_kernel(), {"st": st, **bufs}, (-(-n // sampling.ADVANCE_WG), 1, 1))
    prog.run(n)
    want_rows, want_blocks, want_samples = rows.copy(), blocks.copy(), samples.copy()
    want_rows[:n, 0] += 1
    want_blocks[:n, 3] += 1
    want_samples[:n, 2] += 1
    assert (read(gpu, bufs["rows"], (cap, 2), np.uint32) == want_rows).all()
    assert (read(gpu, bufs["blocks"], (cap, 4), np.uint32) == want_blocks).all()
    assert (read(gpu, bufs["samples"], (cap, 4), np.uint32) == want_samples).all()
    assert int(read(gpu, st, STATE_WORDS, np.uint32)[0]) == (42 if n == 1 else 41)
