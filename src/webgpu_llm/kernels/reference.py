"""numpy references for the kernels (used by the tests) and random weights in any format."""

from __future__ import annotations

import numpy as np

from .formats import FORMATS

_GGML_QTYPE = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1",
               "q4_k": "Q4_K", "q5_k": "Q5_K", "q6_k": "Q6_K", "f16": "F16", "bf16": "BF16", "f32": "F32"}


def int8_rounded(x: np.ndarray) -> np.ndarray:
    """x as the int8 paths see it (the int8 mat-vec, the subgroup-matrix matmul): per 32
    values, round(x / d) * d with d = max|x| / 127, computed as the kernels do (x * (1 / d))."""
    b = x.reshape(-1, 32)
    d = np.abs(b).max(1, keepdims=True).astype(np.float32) / np.float32(127)
    inv = np.where(d > 0, np.float32(1) / np.where(d > 0, d, 1), 0).astype(np.float32)
    return (np.round(b * inv) * d).reshape(x.shape).astype(np.float32)


def random_weight(fmt: str, rows: int, k: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """Random file data of a (rows, k) weight in `fmt`: floats, or the rows' raw block bytes.

    Block scales are kept small and finite so that the products stay well conditioned.
    """
    f = FORMATS[fmt]
    if fmt == "f32":
        return (rng.standard_normal((rows, k)) * scale).astype(np.float32)
    if fmt == "f16":
        return (rng.standard_normal((rows, k)) * scale).astype(np.float16)
    if fmt == "bf16":
        w = (rng.standard_normal((rows, k)) * scale).astype(np.float32)
        return (w.view(np.uint32) >> 16).astype(np.uint16)
    nb = rows * k // f.block
    raw = rng.integers(0, 256, size=(nb, f.block_bytes), dtype=np.uint8)
    half = lambda a: np.asarray(a, np.float16).view(np.uint8).reshape(nb, 2)  # noqa: E731
    d = rng.uniform(0.5, 1.0, nb) * scale
    if fmt in ("q8_0",):
        raw[:, 0:2] = half(d / 127)
    elif fmt in ("q4_0", "q5_0"):
        raw[:, 0:2] = half(d / 8)
    elif fmt in ("q4_1", "q5_1"):
        raw[:, 0:2] = half(d / 8)
        raw[:, 2:4] = half(-d)
    elif fmt in ("q4_k", "q5_k"):
        raw[:, 0:2] = half(d / 512)
        raw[:, 2:4] = half(d / 512)
    elif fmt == "q6_k":
        raw[:, 208:210] = half(d / 2048)
    return raw.reshape(rows, -1)


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


__all__ = ["attention", "dequantize", "int8_rounded", "random_weight", "rms_norm", "rope_pairs", "silu"]
