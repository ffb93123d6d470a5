"""The torch dtypes the webgpu device holds, by the element type names of kernels/dtypes.py
(which says how each lies in a GPU buffer and how WGSL reads and writes it)."""

from __future__ import annotations

import torch

from ..kernels.dtypes import DTYPES, DType

NAMES: dict[torch.dtype, str] = {
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.int64: "i64",
    torch.int32: "i32",
    torch.int16: "i16",
    torch.uint8: "u8",
    torch.int8: "i8",
    torch.bool: "b8",
}


def name_of(t: torch.dtype) -> str:
    """The element type name of torch dtype `t` (refuses the dtypes the kernels cannot address)."""
    n = NAMES.get(t)
    if n is None:
        raise NotImplementedError(f"dtype {t} is not supported on the webgpu device")
    return n


def dtype_of(t: torch.dtype) -> DType:
    return DTYPES[name_of(t)]
