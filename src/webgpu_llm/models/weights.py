"""Moving weights to the GPU in their own format.

A linear layer's weight becomes a `GpuMatrix`: one or more segments, each a buffer in one
format. Consecutive parts of the same format (Q, K and V; gate and up) are concatenated into
one segment, so the fused kernels usually bind a single weight buffer; a part that would
exceed the adapter's storage-binding limit (128 MiB on llvmpipe) is split by rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import ModelFileError
from ..kernels.formats import FORMATS
from ..kernels.linear import Segment
from ..runtime.gpu import Gpu

SUPPORTED_TYPES = "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"


class Tensor(Protocol):
    name: str
    fmt: str | None
    type_name: str
    shape: tuple[int, ...]

    def data(self) -> np.ndarray: ...


@dataclass
class GpuMatrix:
    segments: tuple[Segment, ...]
    buffers: tuple[Any, ...]
    k: int

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.segments)

    def bindings(self) -> dict[str, Any]:
        return {f"w{i}": b for i, b in enumerate(self.buffers)}


@dataclass(frozen=True)
class Part:
    """Rows of one tensor, optionally reordered (RoPE pair permutation)."""

    tensor: Tensor
    perm: np.ndarray | None = None


def check_format(t: Tensor) -> str:
    if t.fmt is None or t.fmt not in FORMATS:
        raise ModelFileError(
            f"tensor {t.name!r} has type {t.type_name}, which is not supported "
            f"(supported: {SUPPORTED_TYPES}); use a file quantized to one of those")
    return t.fmt


def upload_matrix(gpu: Gpu, parts: Sequence[Part], label: str,
                  progress: Callable[[int], None] | None = None) -> GpuMatrix:
    k = parts[0].tensor.shape[-1]
    for p in parts:
        if len(p.tensor.shape) != 2 or p.tensor.shape[-1] != k:
            raise ModelFileError(f"tensor {p.tensor.name!r} has shape {p.tensor.shape}, expected (rows, {k})")
        fmt = check_format(p.tensor)
        if (err := FORMATS[fmt].check_k(k, p.tensor.name)):
            raise ModelFileError(err)
    segments: list[Segment] = []
    buffers: list[Any] = []
    i = 0
    while i < len(parts):
        fmt = parts[i].tensor.fmt
        j = i
        while j < len(parts) and parts[j].tensor.fmt == fmt:
            j += 1
        group = parts[i:j]
        rows = [_rows(p) for p in group]
        data = rows[0] if len(rows) == 1 else np.concatenate(rows, axis=0)
        for r0, r1 in _row_chunks(gpu, FORMATS[fmt], data.shape[0], k):
            words = FORMATS[fmt].pack(data[r0:r1], k)
            buffers.append(gpu.upload(words, f"{label}.{len(buffers)}"))
            segments.append(Segment(fmt, r1 - r0))
            if progress:
                progress(words.nbytes)
        i = j
    return GpuMatrix(tuple(segments), tuple(buffers), k)


def _rows(p: Part) -> np.ndarray:
    a = p.tensor.data()
    try:
        return a if p.perm is None else a[p.perm]
    except (ValueError, OSError) as e:  # a memory map past the end of a truncated file
        raise ModelFileError(f"tensor {p.tensor.name!r} could not be read: {e}") from e


def _row_chunks(gpu: Gpu, fmt: Any, rows: int, k: int) -> list[tuple[int, int]]:
    per_row = max(1, fmt.nbytes(1024, k) // 1024)
    step = max(1, (gpu.max_binding - 4096) // per_row)
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def vector(t: Tensor) -> np.ndarray:
    """A 1-D parameter (norm weight, bias) as float32."""
    fmt = check_format(t)
    a = np.asarray(t.data())
    if fmt == "bf16":
        a = (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32).reshape(-1)


def rope_pair_perm(n_heads: int, head_dim: int) -> np.ndarray:
    """Row order that puts rotate-half partners (i, i + d/2) of each head side by side."""
    half = head_dim // 2
    one = np.empty(head_dim, np.int64)
    one[0::2] = np.arange(half)
    one[1::2] = np.arange(half) + half
    return (np.arange(n_heads)[:, None] * head_dim + one[None, :]).reshape(-1)
