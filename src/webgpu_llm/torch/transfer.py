"""Copies between host tensors and device tensors (bytes are laid out alike on both sides)."""

from __future__ import annotations

import torch

from .context import ctx
from .launch.elementwise import copy_into
from .tensors import block, empty


def upload_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    """Copy a CPU tensor into a device tensor of the same shape (any dtypes, any strides)."""
    src = src.to(dst.dtype).expand(dst.shape)
    if not dst.is_contiguous():
        tmp = empty(dst.shape, dst.dtype)
        upload_into(tmp, src)
        copy_into(dst, tmp)
        return
    if src.numel():
        data = src.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        ctx().stream.write(block(dst), dst.storage_offset() * dst.element_size(), data)


def download(src: torch.Tensor) -> torch.Tensor:
    """A CPU tensor with the values of a device tensor (waits for the GPU)."""
    if src.numel() == 0:
        return torch.empty(src.shape, dtype=src.dtype)
    if not src.is_contiguous():
        tmp = empty(src.shape, src.dtype)
        copy_into(tmp, src)
        src = tmp
    size = src.element_size()
    raw = ctx().stream.read(block(src), src.storage_offset() * size, src.numel() * size)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(src.dtype).reshape(src.shape)
