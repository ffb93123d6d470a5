"""The benchmark tools run end to end and report what they say they measure: the suite runner
(bench/suite.py) plans its commands without a GPU and runs its smoke suite; the torch device's
tools run on a small model (docs/performance.md quotes their figures)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def torch_tool(test: Callable) -> Callable:
    """A torch-device tool's test: needs transformers and a WebGPU adapter, and takes a while."""
    needs = pytest.mark.skipif(importlib.util.find_spec("transformers") is None, reason="needs transformers")
    return pytest.mark.gpu(pytest.mark.slow(needs(test)))


def _suite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "suite.py"), *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)


def test_suite_lists_its_suites() -> None:
    p = _suite("--list")
    assert p.returncode == 0, p.stderr
    assert {line.split()[0] for line in p.stdout.splitlines()} >= {"smoke", "batch1", "mma", "torch", "peers"}


def test_suite_dry_run_interleaves_two_checkouts_per_command() -> None:
    src = str(ROOT / "src")
    p = _suite("batch1", "mma", "torch", "--dry-run", "--src", f"{src},{src}", "--repeat", "2")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert [line[:3] for line in lines] == ["[A]", "[B]"] * (len(lines) // 2)
    assert all(f"PYTHONPATH={src}" in line for line in lines)
    bench = [line for line in lines if "-m webgpu_llm.cli.main bench" in line]
    batch1 = [line for line in bench if "--mma" not in line]
    # each preset on each backend, every command twice for each checkout
    assert len(batch1) == 2 * 2 * 2 * 2
    for preset in ("qwen2.5-0.5b", "qwen2.5-1.5b"):
        for backend in ("dawn", "wgpu"):
            cell = [line for line in batch1 if f"--preset {preset} " in line and f"--backend {backend} " in line]
            assert len(cell) == 4 and all("--dtype f16,q8_0,q4_0 " in line and "--reps 5 --json" in line
                                          for line in cell)
    mma = [line for line in bench if "--mma auto,off" in line]
    assert len(mma) == 2 * 4 and all("--backend dawn" in line and "--dtype q8_0,q4_0" in line for line in mma)
    torch = [line for line in lines if "bench/torch_generate.py --backend dawn" in line]
    assert len(torch) == 2 * 4 and sum("--model qwen2.5-1.5b --modes compiled" in line for line in torch) == 4


def test_suite_dry_run_runs_each_command_under_each_tuning() -> None:
    """--tuning: variants of one checkout under Tuning overrides, each command under each in
    turn (WEBGPU_LLM_TUNING; '' the defaults)."""
    p = _suite("smoke", "moe", "--dry-run", "--tuning", "", "--tuning", "batch_tiles=(1,4,1,2);thin_rows=64")
    assert p.returncode == 0, p.stderr
    engine = [line for line in p.stdout.splitlines() if "webgpu_llm.cli.main" in line]
    assert [line[:3] for line in engine] == ["[A]", "[B]"] * 3
    assert all("WEBGPU_LLM_TUNING='' " in line for line in engine[::2])
    assert all("WEBGPU_LLM_TUNING='batch_tiles=(1,4,1,2);thin_rows=64' " in line for line in engine[1::2])


def test_suite_plans_the_prompt_experiments() -> None:
    """`prompt`: pp512 and the first token of 2048 on Dawn per shape; `tiles`: the tile probe on
    each of a shape's three prompt matmuls."""
    p = _suite("prompt", "tiles", "--presets", "qwen2.5-1.5b", "--dry-run")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert len(lines) == 5
    assert "--preset qwen2.5-1.5b --dtype f16,q4_0 --backend dawn" in lines[0] and "--ttft 2048" in lines[0]
    probes = [line for line in lines if "probe_mma_matmul.py" in line]
    assert [(line.split("--rows ")[1].split()[0], line.split("--fmt ")[1].split()[0]) for line in probes] == [
        ("17920", "f16"), ("17920", "q4_0"), ("1536", "f16"), ("2048", "f16")]


def test_suite_reads_llama_bench_json_as_medians() -> None:
    """The peers' llama-bench figures: each test's median over its runs (one slow run does not
    move it), a longer prompt also as its first token's time; log lines before the JSON skipped."""
    spec = importlib.util.spec_from_file_location("suite", BENCH / "suite.py")
    suite = importlib.util.module_from_spec(spec)
    sys.modules["suite"] = suite  # (its dataclasses look their module up)
    spec.loader.exec_module(suite)
    runs = [{"model_filename": "/tmp/gg/qwen2.5-1.5b-f16.gguf", "n_prompt": 512, "n_gen": 0,
             "avg_ts": 41000.0, "samples_ts": [12000.0, 48000.0, 49000.0, 47000.0, 50000.0]},
            {"model_filename": "/tmp/gg/qwen2.5-1.5b-f16.gguf", "n_prompt": 0, "n_gen": 128, "samples_ts": [370.0, 371.0]},
            {"model_filename": "/tmp/gg/qwen2.5-1.5b-f16.gguf", "n_prompt": 2048, "n_gen": 0, "samples_ts": [40960.0]}]
    cells = suite._llama_cuda_cells("ggml_cuda_init: found 1 CUDA devices\n" + json.dumps(runs))
    assert cells == {"llama.cpp CUDA qwen2.5-1.5b f16": {"pp512 tok/s": 48000.0, "tg128 tok/s": 370.5,
                                                        "pp2048 tok/s": 40960.0, "first token of 2048 ms": 50.0}}


def test_suite_peers_time_llama_cpp_cuda_ten_times() -> None:
    """(Listed without .peers too, as CI's checkout; the CUDA build starts before the engine's
    runs, so that it compiles beside them.)"""
    p = _suite("batch1", "peers", "--dry-run")
    assert p.returncode == 0, p.stderr
    assert "on-device.sh build" in p.stdout.splitlines()[0]
    cuda = [line for line in p.stdout.splitlines() if "llama-bench" in line]
    assert len(cuda) == 2 and all("-r 10" in line and "-o json" in line for line in cuda)
    assert "-p 512 -n 128" in cuda[0] and "-p 2048 -n 0" in cuda[1]


def test_suite_refuses_bad_input_in_one_line() -> None:
    for args in (["nosuch"], ["batch1", "--src", str(ROOT)], ["batch1", "--repeat", "0"], [],
                 ["smoke", "--tuning", "nosuch=1"], ["smoke", "--tuning", "thin_rows=x"]):
        p = _suite(*args, "--dry-run")
        assert p.returncode == 2 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)


@pytest.mark.gpu
@pytest.mark.slow
def test_suite_runs_the_smoke_suite(tmp_path: Path) -> None:
    p = _suite("smoke", "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    (cell,) = json.loads((tmp_path / "summary.json").read_text())["cells"]
    assert (cell["suite"], cell["cell"], cell["figure"]) == ("smoke", "tiny f16 wgpu", "tg4 tok/s")
    assert cell["values"]["A"][0] > 0 and "| smoke | tiny f16 wgpu | tg4 tok/s |" in p.stdout


def _run(script: str, *args: str) -> str:
    """Run a bench script on Dawn; its standard output."""
    p = subprocess.run([sys.executable, str(BENCH / script), "--backend", "dawn", *args], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return p.stdout


@torch_tool
def test_torch_host_cost_replays_a_real_run_without_the_gpu(tmp_path: Path) -> None:
    out = tmp_path / "host.json"
    _run("torch_host_cost.py", "--dtypes", "f32", "--tokens", "3", "--repeat", "1", "--json", str(out))
    (r,) = json.loads(out.read_text())
    # a 24-layer Qwen2: hundreds of launches a token; the host time is a difference of two timed
    # runs, which a loaded machine can make negative, so only its presence is checked here
    assert r["dtype"] == "f32" and 300 < r["launches_per_token"] < 3000
    assert len(r["runs_ms"]) == 1 and math.isfinite(r["host_ms_per_token"])
    assert r["host_ms_per_token"] == r["best_ms"]


@torch_tool
def test_torch_op_cost_times_each_op_on_the_device_and_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "ops.json"
    table = _run("torch_op_cost.py", "--dtype", "f32", "--n", "50", "--json", str(out))
    ops = json.loads(out.read_text())["ops"]
    assert {"add", "linear", "view", "slice"} <= set(ops) and "| add |" in table
    assert all(r["webgpu_us"] > 0 and r["cpu_us"] > 0 for r in ops.values())


@torch_tool
def test_torch_generate_times_an_eager_step_on_the_gpu(tmp_path: Path) -> None:
    out = tmp_path / "gen.json"
    _run("torch_generate.py", "--tiny", "--modes", "eager", "--dtypes", "f32", "--new-tokens", "3", "--runs", "1",
         "--eager-step-gpu", "--out", str(out))
    (r,) = json.loads(out.read_text())["results"]
    g = r["eager_step_gpu"]
    assert g["dispatches"] == sum(k["count"] for k in g["kernels"]) > 10
    assert g["gpu_us"] > 0 and any(k["kernel"] == "matvec" for k in g["kernels"])  # nn.Linear's mat-vec


@torch_tool
def test_torch_generate_pads_the_compiled_step(tmp_path: Path) -> None:
    """--pad-step lengthens the compiled decode step's GPU work (round 84) and takes it off again."""
    out = tmp_path / "pad.json"
    _run("torch_generate.py", "--tiny", "--modes", "compiled", "--dtypes", "f32", "--new-tokens", "4", "--runs", "1",
         "--pad-step", "0,3", "--out", str(out))
    plain, padded = json.loads(out.read_text())["results"]
    assert (plain["pad_step"], padded["pad_step"]) == (0, 3)
    step = padded["decode_step_gpu"]  # profiled after the pads are taken off
    assert padded["padded_step_gpu_us"] > step["gpu_us"] > 0
    assert step["dispatches"] == padded["decode_step_launches"][0]


@torch_tool
def test_torch_step_sweep_remakes_the_step_per_shape(tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    _run("torch_step_sweep.py", "--tiny", "--dtypes", "f32", "--roles", "o", "--shapes", "256x2,64x1,128x8",
         "--rounds", "2", "--reps", "2", "--out", str(out))
    rows = json.loads(out.read_text())["results"]
    tried = [r for r in rows if r["role"] == "o"]
    assert all(r["step_us"] > 0 for r in rows)
    assert sorted((r["round"], r["wg"], r["cols"]) for r in tried) == [(i, *s) for i in (0, 1)
                                                                       for s in ((64, 1), (128, 8), (256, 2))]


@torch_tool
def test_torch_host_cost_of_a_compiled_token(tmp_path: Path) -> None:
    out = tmp_path / "host.json"
    _run("torch_host_cost.py", "--compiled", "--dtypes", "f16", "--tokens", "3", "--repeat", "1", "--layers", "4",
         "--json", str(out), "--profile", str(tmp_path / "prof"))
    (r,) = json.loads(out.read_text())
    # a difference of two timings: on a busy machine even its sign is noise (no test times anything)
    assert r["compiled"] and math.isfinite(r["host_ms_per_token"]) and len(r["runs_ms"]) == 1
    assert r["launches_per_token"] < 100  # the graph is replayed: only the eager ops around it launch
    assert "generate" in (tmp_path / "prof_f16.txt").read_text()


@torch_tool
def test_torch_greedy_check_agrees_with_the_cpu() -> None:
    out = _run("torch_greedy_check.py", "--dtypes", "f32")
    assert "same as the CPU" in out and "[0, 2]" in out  # both layers' attention merged into O


@pytest.mark.gpu
def test_probe_dispatch_overlap_times_each_arrangement(tmp_path: Path) -> None:
    """bench/probe_dispatch_overlap.py: a row per shape with the four arrangements' times and the
    ratios it reports (on llvmpipe the ratios say nothing; that they are computed, do)."""
    out = tmp_path / "overlap.json"
    _run("probe_dispatch_overlap.py", "--groups", "2", "--iters", "0,50", "--n", "4", "--reps", "2", "--out", str(out))
    rows = json.loads(out.read_text())["rows"]
    assert [(r["groups"], r["iters"]) for r in rows] == [(2, 0), (2, 50)]
    for r in rows:
        assert all(r[f"{k}_us"] > 0 for k in ("chain", "interleaved", "independent", "one"))
        assert math.isclose(r["interleaved_over_chain"], r["interleaved_us"] / r["chain_us"])


@pytest.mark.parametrize("fmt", ["f16", "q4_0"])
def test_probe_mma_matmul_cuts_match_the_tile_kernels(fmt: str) -> None:
    """The probe's cut copies of the tile kernels (bench/probe_mma_matmul.py) still find what
    they cut in today's WGSL, and Tint takes each (on Dawn's Null device: no GPU here)."""
    sys.path.insert(0, str(ROOT / "tests" / "kernels"))
    from kernel_harness import tint_check

    from webgpu_llm.kernels.linear import LinearSpec, Segment
    from webgpu_llm.kernels.mma import f16_matmul_kernel, mma_matmul_kernel
    from webgpu_llm.runtime.program import Kernel

    spec_ = importlib.util.spec_from_file_location("probe_mma_matmul", BENCH / "probe_mma_matmul.py")
    probe = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(probe)
    spec = LinearSpec(k=224, segments=(Segment(fmt, 72),), epilogue="silu_mul", x_f16=True)  # (as the probe cuts it)
    kernel = f16_matmul_kernel(spec, probe.parse_shape("2,2,4,4,2,double"))
    cuts = probe.f16_cuts(kernel.wgsl, raw=fmt == "f16", x_f16=True)
    assert len(cuts) == (4 if fmt == "f16" else 3)
    if fmt == "q4_0":
        int8 = mma_matmul_kernel(LinearSpec(k=224, segments=(Segment(fmt, 72),), epilogue="silu_mul"))
        cuts.update({f"int8 {n}": src for n, src in probe.int8_cuts(int8.wgsl).items()})
    for name, src in cuts.items():
        assert src != kernel.wgsl
        tint_check(Kernel(name.replace(" ", "_").replace(",", ""), src, kernel.bindings))


def test_probe_fragment_loads_kernels_pass_tint() -> None:
    """bench/probe_fragment_loads.py's kernels (real subgroup matrices: no run without a GPU)
    pass Tint on Dawn's Null device, each fragment loaded in the loop or once before it."""
    sys.path.insert(0, str(ROOT / "tests" / "kernels"))
    from kernel_harness import tint_check

    spec_ = importlib.util.spec_from_file_location("probe_fragment_loads", BENCH / "probe_fragment_loads.py")
    probe = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(probe)
    for tm, tn, col_major, loads in ((2, 2, True, True), (2, 4, False, True), (4, 4, True, False)):
        k = probe.kernel(tm, tn, 40, col_major, loads, 8)
        assert k.wgsl.count("subgroupMatrixMultiplyAccumulate") == tm * tn
        # the loads inside the loop, or all before it
        loop = k.wgsl[k.wgsl.index("for (var r"):]
        assert loop.count("subgroupMatrixLoad") == (tm + tn if loads else 0)
        tint_check(k)


def test_probe_int8_experts_checks_itself_emulated() -> None:
    """bench/probe_int8_experts.py with both sides emulated (no int8 tiles here): the expert
    kernel's rows equal the dense int8 kernel's on each expert's rows alone, so that on a GPU
    only the real tiles can differ; with every output counted wrong, its diagnosis names the
    tiles' token places and rows; on an adapter without int8 tiles and no --emulate, exit 1."""
    run = [sys.executable, str(BENCH / "probe_int8_experts.py"), "--emulate", "--experts", "5", "--used", "2", "--tokens",
           "70", "--k", "64", "--rows", "40"]
    r = subprocess.run(run, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["emulated vs dense"] < 1e-6 and res["real vs emulated"] == 0 and res["wrong share"] == 0
    r = subprocess.run([*run, "--tol", "-1"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    res = json.loads(r.stdout)
    assert res["wrong share"] == 1 and len(res["wrong by weight row in block (row mod BN)"]) == 40
    assert set(res["wrong by token tile"]) >= {"0"}
    from webgpu_llm.kernels.mma import usable
    from webgpu_llm.runtime.gpu import open_gpu

    if not usable(open_gpu("dawn")):
        r = subprocess.run(run[:2], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == 1 and r.stderr.startswith("error: ") and "int8" in r.stderr
