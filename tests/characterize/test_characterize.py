"""`webgpu-llm characterize`: statistics helpers, derived numbers, and the CI run of `--quick`."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from webgpu_llm.characterize import ablations
from webgpu_llm.characterize.derive import _crossing, compare_with_study
from webgpu_llm.characterize.report import render_report
from webgpu_llm.characterize.runner import sanity_problems
from webgpu_llm.characterize.stats import median, median_ci, median_ci_ranks, summarize

# -- statistics -------------------------------------------------------------------------------------


def test_median_odd_even() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


@pytest.mark.parametrize(("n", "ranks"), [
    # 1-based (l, u) from published tables of the order-statistic CI of the median, minus 1.
    (6, (0, 5)), (10, (1, 8)), (20, (5, 14)), (30, (9, 20)), (50, (17, 32)), (100, (39, 60)),
])
def test_median_ci_ranks_match_tables(n: int, ranks: tuple[int, int]) -> None:
    assert median_ci_ranks(n) == ranks


def test_median_ci_too_few_samples_is_full_range() -> None:
    assert median_ci_ranks(5) is None
    lo, hi, ok = median_ci([5.0, 1.0, 3.0])
    assert (lo, hi, ok) == (1.0, 5.0, False)


def test_median_ci_large_n_uses_normal_approximation() -> None:
    lo, hi = median_ci_ranks(5000)  # type: ignore[misc]
    assert lo < 2500 < hi and hi == 4999 - lo
    assert abs((hi - lo) - 1.96 * math.sqrt(5000)) < 3


def test_median_ci_covers_at_least_95_percent() -> None:
    # Skewed timing-like data (lognormal): the true median is exp(0) = 1.
    rng = np.random.default_rng(1)
    trials, n = 2000, 30
    hits = 0
    for _ in range(trials):
        lo, hi, ok = median_ci(rng.lognormal(0.0, 0.8, n).tolist())
        assert ok
        hits += lo <= 1.0 <= hi
    assert hits / trials >= 0.94


def test_summarize_scales_and_reports() -> None:
    s = summarize([1e-6, 2e-6, 3e-6, 4e-6, 5e-6, 6e-6, 7e-6], scale=1e6)
    assert s["median"] == 4.0 and s["n"] == 7 and s["min"] == 1.0 and s["max"] == 7.0
    assert s["ci95"][0] <= s["median"] <= s["ci95"][1]
    assert len(s["samples"]) == 7 and "ci_ok" not in s
    assert "samples" not in summarize([1.0, 2.0], keep_samples=False)
    assert summarize([1.0, 2.0])["ci_ok"] is False


def test_summarize_rejects_nan_and_empty() -> None:
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError):
        summarize([])


# -- derived numbers, sanity, report ---------------------------------------------------------------


def _stats(m: float) -> dict[str, Any]:
    return {"median": m, "ci95": [m * 0.9, m * 1.1], "mean": m, "min": m, "max": m, "n": 30}


def test_crossing_interpolates_log_log() -> None:
    pts = [(1024, 1.0), (4096, 4.0), (16384, 16.0)]
    assert _crossing(pts, 0.5) == 1024  # even the smallest kernel is slower than the overhead
    assert _crossing(pts, 2.0) == 2048
    assert _crossing(pts, 100.0) is None


def _fake_doc(naive: float = 100.0, seq: float = 30.0, batched: float = 3.0) -> dict[str, Any]:
    from webgpu_llm.characterize.breakdown import CALLS
    from webgpu_llm.characterize.derive import derive_backend
    from webgpu_llm.characterize.methods import METHODS

    us = {"naive": naive, "sequential": seq, "batched": batched, "sequential_native": seq * 0.9,
          "batched_native": batched / 2}
    rec: dict[str, Any] = {
        "available": True,
        "adapter": {"device": "fake", "vendor": "", "adapter_type": "DiscreteGPU", "backend_type": "Vulkan",
                    "description": "", "features": [], "timestamps": True, "wait": "poll"},
        "notes": [],
        "methods": {m: {"per_dispatch_us": _stats(us[m]), "verified": True, "dispatches_per_sample": 8}
                    for m in METHODS},
        "breakdown": {"calls": {c: {"us": _stats(1.0), "what": w} for c, w in CALLS}, "verified": True},
        "sweep": {"points": [{"bytes": b, "workgroups": 1, "single": {"wall_us": _stats(50.0), "gpu_us": _stats(g)},
                              "batched": {"wall_us": _stats(g + 1), "gpu_us": _stats(g)}, "gbps": 1.0}
                             for b, g in ((4096, 2.0), (1 << 20, 40.0), (1 << 26, 2000.0))],
                  "notes": []},
    }
    rec["derived"] = derive_backend(rec)
    doc = {
        "command": "webgpu-llm characterize --quick",
        "config": {"quick": True, "reps": 20, "warmup": 1, "dispatches": 64, "note": "quick"},
        "environment": {"cpu": "x", "cpu_count": 1, "os": "y", "python": "3", "packages": {"wgpu": "0.32"},
                        "git_commit": None, "date_utc": "now"},
        "backends": {"wgpu": rec, "dawn": {"available": False, "error": "no adapter"}},
        "cuda": {"available": False, "note": "no torch"},
        "ablations": {"status": "skipped", "note": "stub", "results": []},
        "timing": {"total_s": 1.0},
    }
    doc["comparison"] = compare_with_study(doc)
    return doc


def test_sanity_problems_flags_order_and_nan() -> None:
    assert sanity_problems(_fake_doc()) == []
    assert any("sequential" in p for p in sanity_problems(_fake_doc(naive=20.0)))
    assert any("batched" in p for p in sanity_problems(_fake_doc(batched=40.0)))
    doc = _fake_doc()
    doc["backends"]["wgpu"]["derived"]["naive_over_sequential"] = float("nan")
    assert any("NaN" in p for p in sanity_problems(doc))


def test_derived_and_comparison_from_fake_doc() -> None:
    doc = _fake_doc()
    d = doc["backends"]["wgpu"]["derived"]
    assert d["naive_over_sequential"] == pytest.approx(100 / 30, rel=1e-3)
    assert d["sum_of_calls_us"]["sequential"] == 8.0
    assert d["crossover_bytes"]["batched_native"] == 4096
    rows = {r["id"]: r for r in doc["comparison"]}
    assert rows["api_us_per_dispatch"]["verdict"]["wgpu"] == "agrees"  # 27 µs on Vulkan
    assert "pending" in rows["fusion_gain"]["text"]
    md = render_report(doc)
    assert "## Comparison with the study" in md and "Not run (skipped)" in md


def test_ablation_results_feed_the_report() -> None:
    doc = _fake_doc()
    base = {"backend": "wgpu", "model": "m", "dtype": "f16", "dispatches_per_token": 100}
    doc["ablations"] = {"status": "ok", "results": [
        {**base, "fused": True, "submit": "per_token", "tok_s": _stats(150.0)},
        {**base, "fused": False, "submit": "per_token", "tok_s": _stats(100.0)},
        {**base, "fused": False, "submit": "per_dispatch", "tok_s": _stats(20.0)},
    ]}
    assert all(ablations.validate_result(r) == [] for r in doc["ablations"]["results"])
    doc["comparison"] = compare_with_study(doc)
    rows = {r["id"]: r for r in doc["comparison"]}
    assert rows["fusion_gain"]["ours"]["wgpu/f16"] == pytest.approx(0.5)
    assert rows["study_pattern_vs_ours"]["ours"]["wgpu/f16"] == pytest.approx(7.5)
    assert "unfused, 1 submit/dispatch" in render_report(doc)


def test_ablation_validation() -> None:
    assert ablations.validate_result({"submit": "sometimes"})  # missing keys, bad submit


def test_cuda_reference_runs_against_a_fake_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA path cannot run here: check its control flow on a stand-in for torch."""
    import contextlib
    import importlib.machinery
    import types

    from webgpu_llm.characterize.config import make_config
    from webgpu_llm.characterize.cuda import measure_cuda
    from webgpu_llm.characterize.harness import Progress

    launches = []

    class Tensor:
        def add_(self, v: int) -> None:
            launches.append(v)

    class Stream:
        def wait_stream(self, other: Any) -> None:
            pass

    class Graph:
        def replay(self) -> None:
            launches.append("replay")

    cuda = types.SimpleNamespace(
        is_available=lambda: True, synchronize=lambda: None, Stream=Stream,
        current_stream=lambda: Stream(), stream=lambda s: contextlib.nullcontext(),
        CUDAGraph=Graph, graph=lambda g: contextlib.nullcontext(),
        get_device_name=lambda d: "Fake GPU")
    torch = types.ModuleType("torch")
    torch.__spec__ = importlib.machinery.ModuleSpec("torch", None)
    torch.__dict__.update(__version__="0.fake", cuda=cuda, device=lambda name: name,
                          zeros=lambda *a, **k: Tensor(), version=types.SimpleNamespace(cuda="12.x"))
    monkeypatch.setitem(sys.modules, "torch", torch)
    out = measure_cuda(make_config(quick=True, reps=3), Progress(False))
    assert out["available"] and out["device"] == "Fake GPU"
    assert set(out["methods"]) == {"naive", "sequential", "graph"}
    assert out["methods"]["sequential"]["per_dispatch_us"]["n"] == 3
    assert launches.count("replay") == 3 + 2  # timed rounds + warm-ups


# -- the CI run --------------------------------------------------------------------------------------


def _no_nan(s: str) -> Any:
    raise ValueError(f"non-finite number {s} in characterize.json")


def _run_quick(out: Path, backend: str = "all") -> dict[str, Any]:
    # A fresh process: Dawn's timestamp toggle must be set before its instance exists.
    cmd = [sys.executable, "-m", "webgpu_llm.cli.main", "characterize", "--quick", "--no-cuda",
           "--backend", backend, "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if r.returncode != 0 and "no backend could run" in r.stderr:
        pytest.skip(f"no WebGPU adapter: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "characterize.json").read_text(), parse_constant=_no_nan)


@pytest.mark.gpu
@pytest.mark.slow
def test_quick_characterization_is_sane(tmp_path: Path) -> None:
    """`--quick` on every available backend: every method and point measured and verified,
    statistics that hold together, no NaN. Which method is faster is a measurement, not a test
    (a busy CI host swaps medians that differ by a few per cent): the report says it."""
    doc = _run_quick(tmp_path)
    assert doc["schema"] == "webgpu-llm/characterize" and doc["config"]["quick"]
    ran = [b for b, rec in doc["backends"].items() if rec["available"]]
    assert ran
    for b in ran:
        rec = doc["backends"][b]
        for k in ("naive", "sequential", "batched"):
            st = rec["methods"][k]["per_dispatch_us"]
            assert 0 < st["ci95"][0] <= st["median"] <= st["ci95"][1], (b, k)
        assert rec["methods"]["naive"]["verified"] and rec["breakdown"]["verified"]
        assert all(p["verified"] for p in rec["sweep"]["points"])
    assert not any("NaN" in p or "counters" in p for p in sanity_problems(doc))
    abl = doc["ablations"]
    assert abl["status"] == "ok", abl
    assert all(ablations.validate_result(r) == [] for r in abl["results"])
    for b in ran:  # fusion cuts the dispatches (its speed is the report's to say)
        rows = {(r["dtype"], r["fused"], r["submit"]): r for r in abl["results"] if r["backend"] == b}
        for d in ("q4_0",):
            assert rows[d, True, "per_token"]["dispatches_per_token"] < rows[d, False, "per_token"]["dispatches_per_token"]
            assert all(rows[d, f, sub]["tok_s"]["median"] > 0 for f, sub in ((True, "per_token"), (False, "per_dispatch")))
    report = (tmp_path / "report.md").read_text()
    assert "## Comparison with the study" in report and "ours" in report
    if doc["environment"]["packages"].get("matplotlib"):
        for png in ("per_dispatch.png", "breakdown.png", "sweep.png"):
            assert (tmp_path / png).stat().st_size > 1000
