"""bench/load.py, the load generator, for a few seconds against the tiny-model server: every
stream completes with its budget of tokens and the figures are there; its --server-cmd starts
a server per run, whose figures bench/suite.py's serve suite reads; its help shows the
defaults it uses."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from server_helpers import API_KEY, ROOT, ServerProcess, env

LOAD = ROOT / "bench" / "load.py"


def load(*args: str) -> dict[str, Any]:
    p = subprocess.run([sys.executable, str(LOAD), *args, "--quiet"], capture_output=True, text=True, timeout=600,
                       env=env(), cwd=ROOT)
    assert p.returncode == 0, p.stderr + p.stdout
    return json.loads(p.stdout)


def test_against_a_running_server(server: ServerProcess) -> None:
    doc = load("--url", server.url, "--api-key", API_KEY, "--clients", "1,3", "--prompt-tokens", "16",
               "--max-tokens", "8", "--rounds", "2")
    assert doc["model"] == "tiny" and [r["clients"] for r in doc["runs"]] == [1, 3]
    for r in doc["runs"]:
        assert r["requests"] == r["completed"] == 2 * r["clients"] and r["failed"] == 0
        assert r["generated_tokens"] == 8 * r["requests"] and r["short_streams"] == 0  # ignore_eos honoured
        assert r["aggregate_tok_s"] > 0 and r["wall_s"] > 0
        assert 0 < r["ttft_s"]["p50"] <= r["ttft_s"]["p99"] <= r["ttft_s"]["max"]
        assert 0 <= r["itl_s"]["p50"] <= r["itl_s"]["p99"]
        # the server's own figure (its /metrics) counts the measured requests alone, each inside its client's
        assert 0 < r["server_ttft_mean_s"] <= r["ttft_s"]["max"], r
        assert r["server_ttft_mean_s"] < r["server_duration_mean_s"] <= r["wall_s"], r


def test_clients_spread_over_processes(server: ServerProcess) -> None:
    """--procs 2: the clients' streams are decoded by two processes started together, and their
    streams are counted as one run's."""
    doc = load("--url", server.url, "--api-key", API_KEY, "--clients", "3", "--procs", "2", "--prompt-tokens", "8",
               "--max-tokens", "6", "--warmup", "0")
    r = doc["runs"][0]
    assert r["client_processes"] == 2 and r["requests"] == r["completed"] == 3 and r["failed"] == 0
    assert r["generated_tokens"] == 18 and r["aggregate_tok_s"] > 0 and r["ttft_s"]["p50"] > 0
    assert 0 < r["server_ttft_mean_s"] <= r["ttft_s"]["max"], r


def test_a_server_started_per_run(tiny_model: Path, tmp_path: Path) -> None:
    cmd = (f"{sys.executable} -m webgpu_llm.cli.main serve -m {tiny_model} --parallel {{clients}} --ctx {{ctx}} "
           "--port {port} --quiet")
    log = tmp_path / "server.log"
    doc = load("--server-cmd", cmd, "--clients", "2", "--prompt-tokens", "8", "--max-tokens", "4",
               "--server-log", str(log), "--out", str(tmp_path / "out.json"))
    run = doc["runs"][0]
    assert run["completed"] == 2 and run["generated_tokens"] == 8
    assert "--parallel 2 --ctx 28 --port" in run["server_cmd"]
    assert json.loads((tmp_path / "out.json").read_text()) == doc
    # the suite runner's serve suite reads these figures
    suite = _import("suite")
    cells = suite.figures(suite.Cmd("serve", "tiny f32 wgpu", [], "load"), tmp_path / "out.json", "")
    assert cells["tiny f32 wgpu K=2"]["aggregate tok/s"] == run["aggregate_tok_s"]
    assert {"TTFT p50 ms", "ITL p50 ms", "ITL p99 ms"} <= set(cells["tiny f32 wgpu K=2"])
    plan = suite.serve(suite.Options(["qwen2.5-0.5b"], ["dawn"], ["q4_0"], None))
    assert [c.name for c in plan] == ["GGUF files", "llama-server", "qwen2.5-0.5b q4_0 dawn in-process",
                                      "qwen2.5-0.5b q4_0 dawn", "qwen2.5-0.5b q4_0 llama-server"]
    assert "--streams" in plan[2].argv and "1,32,64" in plan[2].argv  # the same requests without HTTP
    assert "--profile" in plan[2].argv  # and the batched step's kernels and replays
    cells = suite._engine_cells({"engine": [{"model": "q", "dtype": "file", "backend": "dawn", "streams": [
        {"streams": 32, "tok_s": 2000.0, "step_gpu_ms": 3.0, "wall_ms_per_step": 12.0, "host_ms_per_step": 1.5}]}]}, [])
    assert cells["q file dawn"] == {"32 streams tok/s": 2000.0, "32 streams step GPU ms": 3.0,
                                    "32 streams step ms": 12.0, "32 streams step host ms": 1.5}
    assert "--parallel {clients}" in plan[3].argv[-1] and "-np {clients}" in plan[4].argv[-1]


def _import(name: str) -> Any:
    sys.path.insert(0, str(LOAD.parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.pop(0)


def test_help_shows_the_defaults_used() -> None:
    tool = _import("load")
    text = subprocess.run([sys.executable, str(LOAD), "--help"], capture_output=True, text=True, check=True).stdout
    args = tool.parse(["--url", "http://x"])
    joined = re.sub(r"\n\s+(?=[^\s-])", " ", text)  # each option's help on one line
    shown = dict(re.findall(r"^\s+--([\w-]+) .*?\(default: ([^)]+)\)", joined, re.M))
    assert shown["clients"] == "1,8,32" and args.clients == [1, 8, 32]
    for name in ("prompt-tokens", "max-tokens", "rounds", "warmup", "seed", "timeout", "start-timeout"):
        assert shown[name] == str(getattr(args, name.replace("-", "_"))), name
    assert shown["token-range"] == "100:1000" and args.token_range == (100, 1000)
