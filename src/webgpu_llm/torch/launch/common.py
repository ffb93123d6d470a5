"""What every launcher shares: binding tensors, building kernels, packing parameters, collapsing
dimensions."""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable, Sequence

import torch

from ...runtime.program import Kernel
from ..context import ctx
from ..memory import Block
from ..stream import GpuKernel
from ..tensors import block


def binding(t: torch.Tensor) -> Block:
    """The block of `t`, bound whole (kernels add the tensor's offset themselves)."""
    b = block(t)
    if b.size > ctx().gpu.max_binding:
        raise NotImplementedError(
            f"a tensor of {b.size / 2**20:.0f} MiB is over this adapter's binding limit of "
            f"{ctx().gpu.max_binding / 2**20:.0f} MiB"
        )
    return b


def compiled(key: Hashable, make: Callable[[], Kernel]) -> GpuKernel:
    """The stream's pipeline for `key`, built from `make()` on first use. The kernel's last
    binding is its parameter block `P`, which the stream binds itself."""
    return ctx().stream.kernel(key, lambda: _for_stream(make()))


def _for_stream(k: Kernel) -> tuple[str, str, int]:
    assert k.bindings[-1] == "P", k.bindings
    return k.name, k.wgsl, len(k.bindings) - 1


def pack(words: Sequence[int], floats: Sequence[float] = (), kind: str = "f32") -> bytes:
    """u32 words, then scalars as f32 or i32 bit patterns."""
    head = struct.pack(f"<{len(words)}I", *[w & 0xFFFFFFFF for w in words])
    if not floats:
        return head
    if kind == "f32":
        return head + struct.pack(f"<{len(floats)}f", *floats)
    return head + struct.pack(f"<{len(floats)}i", *[_i32(v) for v in floats])


def _i32(v: float) -> int:
    i = int(v)
    return max(-(2**31), min(2**31 - 1, i))


def broadcast_strides(t: torch.Tensor, shape: Sequence[int]) -> list[int]:
    """Strides of `t` seen as `shape` (0 along broadcast dimensions)."""
    r = len(shape)
    st = [0] * r
    off = r - t.dim()
    for d, (s, k) in enumerate(zip(t.shape, t.stride())):
        st[off + d] = k if s != 1 else 0
    return st


def collapse(shape: Sequence[int], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Merge dimensions that are contiguous in every operand; drop size-1 dimensions."""
    dims: list[tuple[int, list[int]]] = []
    n = len(strides)
    for d, size in enumerate(shape):
        if size == 1:
            continue
        st = [s[d] for s in strides]
        if dims:
            psize, pst = dims[-1]
            if all(pst[k] == st[k] * size for k in range(n)):
                dims[-1] = (psize * size, st)
                continue
        dims.append((size, st))
    if not dims:
        return [1], [[0] for _ in range(n)]
    return [s for s, _ in dims], [[st[k] for _, st in dims] for k in range(n)]
