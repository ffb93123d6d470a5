"""Shared helpers of the tests of the torch `webgpu` device (tests/test_torch_*.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
wt = pytest.importorskip("webgpu_llm.torch")

DEV = "webgpu"


def require_device() -> None:
    if not wt.is_available():
        pytest.skip("no WebGPU adapter for the torch webgpu device")


def to_dev(x: object) -> object:
    return x.to(DEV) if isinstance(x, torch.Tensor) else x


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().cpu().double(), want.detach().double()
    scale = want.abs().max().item() or 1.0
    return (got - want).abs().max().item() / scale


def assert_close(got: torch.Tensor, want: torch.Tensor, tol: float) -> None:
    assert got.device.type == DEV, got.device
    assert tuple(got.shape) == tuple(want.shape), (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if want.dtype in (torch.bool, torch.int64, torch.int32, torch.uint8):
        assert torch.equal(got.cpu(), want)
    else:
        err = rel_err(got, want)
        assert err <= tol, f"relative error {err:.3g} > {tol}"


TOL = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def ref_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a CPU reference of a long sum computes in: float64 for f32 (an f32 CPU sum of
    ~1000 products rounds about as much as the kernel's: 1.1x a 6e-6 budget on its own in 200
    draws), f32 for 16-bit types (as the kernels accumulate)."""
    return torch.float64 if dtype == torch.float32 else torch.float32
