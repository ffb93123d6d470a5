"""The torch device's benchmark tools run end to end on a small model and report what they say
they measure (bench/NOTES.md quotes their figures)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytestmark = [pytest.mark.gpu, pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _run(script: str, *args: str) -> None:
    p = subprocess.run([sys.executable, str(BENCH / script), "--backend", "dawn", *args], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]


def test_torch_host_cost_replays_a_real_run_without_the_gpu(tmp_path: Path) -> None:
    out = tmp_path / "host.json"
    _run("torch_host_cost.py", "--dtypes", "f32", "--tokens", "3", "--repeat", "1", "--json", str(out))
    (r,) = json.loads(out.read_text())
    # a 24-layer Qwen2: hundreds of launches a token, and a host time that is not zero
    assert r["dtype"] == "f32" and 300 < r["launches_per_token"] < 3000
    assert 0 < r["host_ms_per_token"] == r["best_ms"]


def test_torch_generate_times_an_eager_step_on_the_gpu(tmp_path: Path) -> None:
    out = tmp_path / "gen.json"
    _run("torch_generate.py", "--tiny", "--modes", "eager", "--dtypes", "f32", "--new-tokens", "3", "--runs", "1",
         "--eager-step-gpu", "--out", str(out))
    (r,) = json.loads(out.read_text())["results"]
    g = r["eager_step_gpu"]
    assert g["dispatches"] == sum(k["count"] for k in g["kernels"]) > 10
    assert g["gpu_us"] > 0 and any(k["kernel"] == "matvec" for k in g["kernels"])  # nn.Linear's mat-vec
