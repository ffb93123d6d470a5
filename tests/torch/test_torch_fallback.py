"""Ops without a WebGPU kernel run on the CPU, warn once, and are counted in the report."""

from __future__ import annotations

import warnings

import pytest
from torch_helpers import require_device, torch, wt

pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("ignore::webgpu_llm.torch.FallbackWarning")]


@pytest.fixture(autouse=True)
def _device() -> None:
    require_device()
    wt.reset_fallback_report()


def test_functional_fallback_warns_once_and_counts() -> None:
    x = torch.randn(4, 9)
    d = x.to("webgpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            values, indices = torch.sort(d, dim=1)
    assert values.device.type == "webgpu" and indices.device.type == "webgpu"
    want = torch.sort(x, dim=1)
    assert torch.equal(values.cpu(), want.values) and torch.equal(indices.cpu(), want.indices)
    report = wt.fallback_report()
    assert len(report) == 1 and next(iter(report.values())) == 3
    assert "sort" in next(iter(report))
    fallback_warnings = [w for w in caught if issubclass(w.category, wt.FallbackWarning)]
    assert len(fallback_warnings) <= 1  # once per op per process


def test_inplace_fallback_writes_back_into_views() -> None:
    x = torch.randn(5, 6)
    y = torch.randn(5, 6)
    d, e = x.to("webgpu"), y.to("webgpu")
    d[:, 2:5].lerp_(e[:, 2:5], 0.25)
    x[:, 2:5].lerp_(y[:, 2:5], 0.25)
    assert torch.allclose(d.cpu(), x)
    assert any("lerp" in k for k in wt.fallback_report())


def test_report_resets() -> None:
    torch.randn(3, device="cpu").to("webgpu").cumprod(0)
    assert wt.fallback_report()
    wt.reset_fallback_report()
    assert wt.fallback_report() == {}
