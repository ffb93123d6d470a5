"""The encoders' kernels against numpy on odd sizes: LayerNorm (with the embeddings' position
rows added), the GELU epilogue of the linear kernels, bidirectional attention over packed texts
(with and without rotary embeddings, GQA), and pooling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from kernel_harness import read, rel_err, run_kernel

from reference import dequantize, rope_pairs
from webgpu_llm.kernels.encoder import EncoderAttentionSpec, Packing, encoder_attention_kernel, pool_kernel
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.kernels.linear import (
    LinearSpec,
    Segment,
    matmul_grid,
    matmul_kernel,
    matvec_grid,
    matvec_kernel,
)
from webgpu_llm.kernels.rows import layernorm_kernel
from webgpu_llm.models.presets import random_weight

_erf = np.vectorize(math.erf)


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + eps) * w + b).astype(np.float32)


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.sqrt(2.0)))


@pytest.mark.parametrize("k, add", [(52, ""), (388, "row"), (1028, "first")])
def test_layernorm(gpu, k, add):
    """Rows of an offset mean (the one-pass variance would lose digits there), weights and
    biases at offsets of the parameter buffer, and the embeddings' added rows."""
    rng = np.random.default_rng(30)
    t, eps, off = 7, 1e-12, 8
    x = (rng.standard_normal((t, k)) * 3 + 40).astype(np.float32)
    a = rng.standard_normal((5, k)).astype(np.float32)
    pos = np.array([[3, 0], [0, 0], [4, 1], [1, 1], [2, 2], [0, 3], [1, 3]], np.uint32)
    w, b = rng.standard_normal(k).astype(np.float32), rng.standard_normal(k).astype(np.float32)
    pv = np.zeros(off + 2 * k, np.float32)
    pv[off: off + k], pv[off + k:] = w, b
    xb = gpu.upload(x)
    bufs = {"x": xb, "pv": gpu.upload(pv)}
    if add:
        bufs["a"] = gpu.upload(a)
    if add == "row":
        bufs["rows"] = gpu.upload(pos)
    run_kernel(gpu, layernorm_kernel(k, eps, off, off + k, add), bufs, (t, 1, 1), n=t)
    want = x + {"": 0.0, "row": a[pos[:, 0]], "first": a[0]}[add]
    assert rel_err(read(gpu, xb, (t, k)), layer_norm(want, w, b, eps)) < 2e-6


@pytest.mark.parametrize("fmt", ["f32", "f16", "q8_0"])
def test_gelu_epilogue(gpu, fmt):
    """y = GELU(W x + bias) with erf, in the prompt matmul and the mat-vec; 37 rows (an odd
    last pair), a ragged K for the float formats."""
    rng = np.random.default_rng(31)
    rows, t = 37, 21
    k = 96 if FORMATS[fmt].block == 32 else 72
    raw = random_weight(fmt, rows, k, rng)
    w = dequantize(fmt, raw, k)
    x = rng.standard_normal((t, k)).astype(np.float32)
    x[1] *= 40  # pre-activations far out on both sides: GELU's tails (0 and x), no NaN from erf's
    bias = rng.standard_normal(rows).astype(np.float32)
    pv = np.concatenate([np.zeros(4, np.float32), bias])
    spec = LinearSpec(k=k, segments=(Segment(fmt, rows),), epilogue="gelu", bias=True, bias_off=4)
    bufs = {"w0": gpu.upload(FORMATS[fmt].pack(raw, k)), "x": gpu.upload(x), "pv": gpu.upload(pv),
            "y": gpu.buffer(t * rows * 4)}
    pre = x.astype(np.float64) @ w.T.astype(np.float64) + bias
    want = gelu(pre)
    run_kernel(gpu, matmul_kernel(spec, 4, False), bufs, matmul_grid(spec, 4)(t), n=t)
    y = read(gpu, bufs["y"], (t, rows))
    assert rel_err(np.delete(y, 1, 0), np.delete(want, 1, 0)) < 1e-5
    far = pre[1] < -15
    assert rel_err(y[1], want[1]) < 1e-5 and far.any() and (y[1][far] == 0).all()
    run_kernel(gpu, matvec_kernel(spec, wg=64, tpr=1), bufs, matvec_grid(spec, 64, 1))
    assert rel_err(read(gpu, bufs["y"], rows), want[0]) < 1e-5


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bidirectional GQA attention of one text: q (t, hq, d), k and v (t, hkv, d)."""
    _, hq, d = q.shape
    out = np.zeros_like(q)
    for h in range(hq):
        kh = h // (hq // k.shape[1])
        s = q[:, h].astype(np.float64) @ k[:, kh].T / np.sqrt(d)
        p = np.exp(s - s.max(-1, keepdims=True))
        out[:, h] = (p / p.sum(-1, keepdims=True)) @ v[:, kh]
    return out


@pytest.mark.parametrize("d, rope, lengths", [(24, False, (1, 17, 40, 5)), (36, True, (33, 2, 16)),
                                              (64, True, (70, 9)), (128, False, (3, 21))])
def test_encoder_attention_packed(gpu, d, rope, lengths):
    """Texts of odd lengths packed into one batch (query blocks of 16 rows end inside texts,
    key chunks straddle their ends); heads not a multiple of the 8 lanes; chunks of 16 keys
    for wide heads; rotary embeddings at each row's position within its text."""
    rng = np.random.default_rng(32)
    hq, hkv = 6, 2
    spec = EncoderAttentionSpec(hq, hkv, d, rope)
    pk = Packing(lengths)
    n = pk.rows
    qkv = rng.standard_normal((n, spec.row)).astype(np.float32)
    inv = (1.0 / 1000.0 ** (np.arange(0, d, 2) / d)).astype(np.float32)
    bufs = {"blocks": gpu.upload(pk.block_table()), "qkv": gpu.upload(qkv), "out": gpu.buffer(n * hq * d * 4)}
    if rope:
        ang = np.arange(max(lengths), dtype=np.float32)[:, None] * inv[None, :]
        table = np.stack([np.cos(ang.astype(np.float64)), np.sin(ang.astype(np.float64))], -1)
        bufs["rope"] = gpu.upload(table.reshape(max(lengths), d // 4, 4).astype(np.float32))
    run_kernel(gpu, encoder_attention_kernel(spec), bufs, (hq, pk.blocks, 1))
    got = read(gpu, bufs["out"], (n, hq, d))
    q = qkv[:, : hq * d].reshape(n, hq, d)
    k = qkv[:, hq * d: (hq + hkv) * d].reshape(n, hkv, d)
    v = qkv[:, (hq + hkv) * d:].reshape(n, hkv, d)
    for s, L in zip(pk.starts, lengths):
        qs, ks = q[s: s + L], k[s: s + L]
        if rope:
            pos = np.arange(L, dtype=np.float64)
            qs, ks = rope_pairs(qs, pos, inv), rope_pairs(ks, pos, inv)
        assert rel_err(got[s: s + L], _attention(qs, ks, v[s: s + L])) < 1e-5, (s, L)


@pytest.mark.parametrize("mode", ["mean", "cls", "last"])
@pytest.mark.parametrize("normalize", [False, True])
def test_pool(gpu, mode, normalize):
    rng = np.random.default_rng(33)
    k, lengths = 76, (3, 1, 70, 12)
    pk = Packing(lengths)
    x = rng.standard_normal((pk.rows, k)).astype(np.float32)
    out = gpu.buffer(len(lengths) * k * 4)
    run_kernel(gpu, pool_kernel(k, mode, normalize), {"seqs": gpu.upload(pk.text_table()), "x": gpu.upload(x),
                                                      "out": out}, (len(lengths), 1, 1))
    want = []
    for s, L in zip(pk.starts, lengths):
        rows = x[s: s + L].astype(np.float64)
        want.append({"mean": rows.mean(0), "cls": rows[0], "last": rows[-1]}[mode])
    w = np.array(want)
    if normalize:
        w /= np.linalg.norm(w, axis=1, keepdims=True)
    assert rel_err(read(gpu, out, (len(lengths), k)), w) < 1e-6


def test_packing_tables():
    pk = Packing((3, 17, 1))
    assert pk.n == (21, 1 + 2 + 1, 3)
    assert pk.row_table()[:5].tolist() == [[0, 0], [1, 0], [2, 0], [0, 1], [1, 1]]
    assert pk.row_table()[-1].tolist() == [0, 2]
    assert pk.block_table().tolist() == [[0, 3, 0, 3], [3, 16, 3, 17], [19, 1, 3, 17], [20, 1, 20, 1]]
    assert pk.text_table().tolist() == [[0, 3], [3, 17], [20, 1]]
