"""`webgpu-llm characterize --browser chromium --quick`: the browser leg runs in headless
Chromium and its JSON passes the checks the native legs' does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from web_helpers import chromium_or_skip

from webgpu_llm.characterize.browser import record_from_page
from webgpu_llm.characterize.report import render_report
from webgpu_llm.characterize.runner import sanity_problems


def _no_nan(s: str) -> Any:
    raise ValueError(f"non-finite number {s} in characterize.json")


@pytest.mark.slow
def test_quick_browser_leg(tmp_path: Path) -> None:
    chromium_or_skip()
    pytest.importorskip("playwright")
    cmd = [sys.executable, "-m", "webgpu_llm.cli.main", "characterize", "--quick", "--no-cuda", "--no-ablations",
           "--backend", "none", "--browser", "chromium", "--out", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((tmp_path / "characterize.json").read_text(), parse_constant=_no_nan)
    assert doc["schema"] == "webgpu-llm/characterize" and doc["config"]["quick"]
    assert "--browser chromium" in doc["command"] and doc["backends"] == {}
    rec = doc["browsers"]["chromium"]
    assert rec["available"], rec.get("error")
    assert rec["browser"]["version"].split(".")[0].isdigit() and "Chrome" in rec["browser"]["user_agent"]
    assert rec["adapter"]["architecture"] == "swiftshader" and rec["adapter"]["adapter_type"] == "CPU"
    us = {m: v["per_dispatch_us"]["median"] for m, v in rec["methods"].items()}
    assert set(us) == {"naive", "sequential", "batched"} and all(v > 0 for v in us.values())
    assert all(v["verified"] and v["per_dispatch_us"]["n"] == doc["config"]["method_reps"]
               for v in rec["methods"].values())
    points = rec["sweep"]["points"]
    assert points and all(p["verified"] for p in points)
    assert all(p["batched"]["gpu_us"]["median"] > 0 for p in points) == rec["sweep"]["timestamps"]
    # which method is faster is the report's finding, not the test's (no test times anything)
    assert rec["derived"]["naive_over_sequential"] > 0
    assert not any("NaN" in p or "counters" in p for p in sanity_problems(doc))
    report = (tmp_path / "report.md").read_text()
    assert "## Browser leg" in report and "chromium" in report and "swiftshader" in report


def test_browser_record_flags_disorder() -> None:
    """The sanity check reads the browser leg as the native ones: out of order is a problem."""
    raw = {"adapter": {"architecture": "x", "device": "", "vendor": "v"}, "notes": [],
           "methods": {m: {"samples_s": [t * 1e-6] * 8, "dispatches_per_sample": 8, "verified": True}
                       for m, t in (("naive", 100.0), ("sequential", 120.0), ("batched", 5.0))},
           "sweep": {"points": [], "notes": [], "timestamps": False}}
    rec = record_from_page(raw)
    doc = {"backends": {}, "browsers": {"chromium": rec}, "config": {"quick": True}}
    assert any("sequential" in p for p in sanity_problems(doc))
    assert rec["methods"]["naive"]["api"] == "browser"
    assert rec["derived"]["sequential_over_batched"] == pytest.approx(24.0)
    full = {"command": "c", "config": {"quick": True, "reps": 1, "warmup": 0, "dispatches": 8},
            "environment": {"cpu": "x", "cpu_count": 1, "os": "y", "python": "3", "packages": {},
                            "git_commit": None, "date_utc": "now"},
            "backends": {}, "browsers": {"chromium": rec, "firefox": {"available": False, "error": "absent"}},
            "cuda": {"available": False, "note": "n"}, "ablations": {"status": "skipped", "note": "s", "results": []},
            "comparison": [], "timing": {"total_s": 1.0}}
    md = render_report(full)
    assert "## Browser leg" in md and "firefox: not run (absent)" in md
