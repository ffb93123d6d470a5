"""numpy references of the kernels and the GPU sampler, for the tests (and the bench probes that
check a kernel's output)."""

from __future__ import annotations

import numpy as np

from webgpu_llm.engine.sampling import SamplingParams
from webgpu_llm.kernels.sampling import CAND

_GGML_QTYPE = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1",
               "q4_k": "Q4_K", "q5_k": "Q5_K", "q6_k": "Q6_K", "q2_k": "Q2_K", "q3_k": "Q3_K",
               "iq4_nl": "IQ4_NL", "iq4_xs": "IQ4_XS", "mxfp4": "MXFP4", "f16": "F16", "bf16": "BF16", "f32": "F32"}


def int8_rounded(x: np.ndarray) -> np.ndarray:
    """x as the int8 paths see it (the int8 mat-vec, the subgroup-matrix matmul): per 32
    values, round(x / d) * d with d = max|x| / 127, computed as the kernels do (x * (1 / d))."""
    b = x.reshape(-1, 32)
    d = np.abs(b).max(1, keepdims=True).astype(np.float32) / np.float32(127)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    return (np.round(b * inv) * d).reshape(x.shape).astype(np.float32)


def dequantize(fmt: str, data: np.ndarray, k: int) -> np.ndarray:
    """File data -> (rows, k) float32, with the gguf package's reference dequantization."""
    if fmt == "f32":
        return data.astype(np.float32)
    if fmt == "f16":
        return data.astype(np.float32)
    if fmt == "bf16":
        return (data.astype(np.uint32) << 16).view(np.float32)
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gq

    out = gq(np.ascontiguousarray(data, np.uint8), GGMLQuantizationType[_GGML_QTYPE[fmt]])
    return out.reshape(data.shape[0], k).astype(np.float32)


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    x = x.astype(np.float64)
    return (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w).astype(np.float32)


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def rope_pairs(x: np.ndarray, pos: np.ndarray, inv_freq: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs (x[..., 2i], x[..., 2i+1]) of each head by pos * inv_freq[i]."""
    ang = pos[:, None] * inv_freq[None, :]  # (t, d/2)
    c, s = np.cos(ang), np.sin(ang)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c = c[:, None, :]
    s = s[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, pos0: int) -> np.ndarray:
    """Causal GQA attention. q (t, hq, d); k, v (L, hkv, d) for positions 0..L-1; query i at pos0+i."""
    t, hq, d = q.shape
    hkv = k.shape[1]
    out = np.zeros_like(q)
    for h in range(hq):
        kh = h // (hq // hkv)
        s = q[:, h, :] @ k[:, kh, :].T / np.sqrt(d)
        mask = np.arange(k.shape[0])[None, :] > (pos0 + np.arange(t))[:, None]
        s = np.where(mask, -np.inf, s)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[:, h, :] = p @ v[:, kh, :]
    return out


def reference_distribution(logits: np.ndarray, p: SamplingParams, history: list[int] | None = None) -> np.ndarray:
    """The probability of each token under the GPU sampler's semantics (llama.cpp's chain:
    penalty -> top-k -> top-p -> min-p -> temperature), as a float64 vector."""
    lg = logits.astype(np.float64).copy()
    if p.penalised and history:
        window = history[-p.repeat_last_n:]
        for tok in set(window):
            lg[tok] = lg[tok] / p.repeat_penalty if lg[tok] > 0 else lg[tok] * p.repeat_penalty
            lg[tok] -= p.frequency_penalty * window.count(tok) + p.presence_penalty
    out = np.zeros_like(lg)
    if p.greedy:
        out[int(np.argmax(lg))] = 1.0
        return out
    if not p.filtered:
        e = np.exp((lg - lg.max()) / p.temperature)
        return e / e.sum()
    order = np.argsort(-lg, kind="stable")
    k = min(p.top_k, CAND) if p.top_k > 0 else CAND
    top = order[:k]
    m0 = lg[top[0]]
    z = np.exp(lg[top] - m0).sum() if p.top_k > 0 else np.exp(lg - m0).sum()
    keep = k
    if p.top_p < 1.0:
        cum = np.cumsum(np.exp(lg[top] - m0) / z)
        hit = np.nonzero(cum >= p.top_p)[0]
        if len(hit):
            keep = int(hit[0]) + 1
    if p.min_p > 0.0:
        floor = m0 + np.log(p.min_p)
        j = 1
        while j < keep and lg[top[j]] >= floor:
            j += 1
        keep = j
    sel = top[:keep]
    w = np.exp((lg[sel] - m0) / p.temperature)
    out[sel] = w / w.sum()
    return out


__all__ = ["attention", "dequantize", "int8_rounded", "reference_distribution", "rms_norm", "rope_pairs", "silu"]
