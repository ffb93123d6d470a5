"""`webgpu-llm bench`: the PyTorch peer's logic without CUDA, and options checked before any work."""

from __future__ import annotations

import pytest

from webgpu_llm.cli.main import main

pytest.importorskip("transformers")


def test_torch_peer_skips_the_prompt_when_n_pp_is_0() -> None:
    """`--n-pp 0` ran a 0-token prompt through the model (`cannot reshape a tensor of 0 elements`);
    the peer now measures decode only. The same code runs on the CPU here (no CUDA)."""
    from webgpu_llm.bench.peers import bench_torch
    from webgpu_llm.models.presets import preset_model

    cfg, _ = preset_model("tiny", "f32")
    rows = bench_torch(cfg, "f32", n_prompt=4, n_gen=2, n_pp=0, reps=1, device="cpu")
    assert len(rows) == 1 and rows[0]["tg_tok_s"] > 0 and "pp_tok_s" not in rows[0]
    rows = bench_torch(cfg, "f32", n_prompt=4, n_gen=2, n_pp=8, reps=1, device="cpu")
    assert len(rows) == 1 and rows[0]["tg_tok_s"] > 0 and rows[0]["pp_tok_s"] > 0


@pytest.mark.parametrize(("option", "value"), [("--n-pp", "-1"), ("--n-gen", "0"), ("--n-prompt", "0"),
                                               ("--reps", "0"), ("--streams", "0"), ("--streams", "4,x")])
def test_bad_counts_are_one_line_errors(capsys, option: str, value: str) -> None:
    code = main(["bench", "--preset", "tiny", "--backend", "wgpu", option, value])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and option in err, err


@pytest.mark.parametrize(("args", "says"), [(["--embed", "0"], "--embed 0"),
                                            (["--embed", "4", "--preset", "tiny"], "needs an embedding model"),
                                            (["--embed", "4", "--peers", "torch"], "sentence-transformers")])
def test_bad_embed_options_are_one_line_errors(capsys, args: list[str], says: str) -> None:
    code = main(["bench", "--backend", "wgpu", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and says in err, err


def test_embed_bench_smoke(capsys, tmp_path) -> None:
    """`bench --embed N`: the engine's texts/s beside sentence-transformers on the CPU, the JSON
    the suite reads; on a preset (random weights on both sides) and, where installed, on
    all-MiniLM-L6-v2."""
    import json

    from model_files import minilm_dir, sentence_transformers_or_skip

    sentence_transformers_or_skip()

    out = tmp_path / "embed.json"
    code = main(["bench", "--embed", "4", "--preset", "all-minilm-l6-v2", "--backend", "wgpu", "--reps", "1",
                 "--peers", "sentence-transformers", "--json", "--out", str(out)])
    assert code == 0
    doc = json.loads(out.read_text())
    (row,), (peer,) = doc["engine"], doc["peers"]
    assert row["texts"] == peer["texts"] == 4 and row["tokens"] == peer["tokens"] and row["dtype"] == "f16"
    assert row["texts_s"] > 0 and peer["texts_s"] > 0 and peer["peer"] == "sentence-transformers (CPU)"
    model = minilm_dir()
    if model is None:
        return  # (the preset covered the code; the real model is optional here)
    capsys.readouterr()
    code = main(["bench", "--embed", "4", "-m", str(model), "--backend", "wgpu", "--reps", "1",
                 "--peers", "sentence-transformers"])
    table = capsys.readouterr().out
    assert code == 0 and "| sentence-transformers (CPU) | f32 |" in table and "| 4 |" in table, table


@pytest.mark.parametrize("preset", ["qwen3-0.6b", "gemma-3-1b"])
def test_new_family_presets_run(wgpu_gpu, preset: str) -> None:
    """The Qwen3 and Gemma 3 presets' layers (cut to two, with a small vocabulary: the full
    models would take minutes on a software adapter) through the engine's benchmark, and the
    torch peer of the same family on the CPU."""
    from webgpu_llm.bench.engine_bench import bench_engine
    from webgpu_llm.bench.peers import bench_torch
    from webgpu_llm.engine import Settings
    from webgpu_llm.models.presets import preset_model

    cfg, tensors = preset_model(preset, "f16", n_layers=2, vocab=512)
    assert cfg.n_layers == 2 and len(cfg.architecture.windows) in (0, 2)
    row = bench_engine(wgpu_gpu, cfg, tensors, Settings(), n_prompt=4, n_gen=4, n_pp=8, reps=1)
    assert row["tg_tok_s"] > 0 and row["pp_tok_s"] > 0
    peer = bench_torch(cfg, "f32", n_prompt=4, n_gen=2, n_pp=0, reps=1, device="cpu")
    assert len(peer) == 1 and peer[0]["tg_tok_s"] > 0


def test_streams_through_the_scheduler(capsys, tmp_path) -> None:
    """`--streams 1,3`: each count's requests run together through the server's scheduler (the
    serial one for 1, continuous batching for 3) and every request's tokens are counted."""
    import json

    out = tmp_path / "b.json"
    code = main(["bench", "--preset", "tiny", "--dtype", "f32", "--backend", "wgpu", "--n-pp", "0", "--n-gen", "6",
                 "--reps", "1", "--streams", "1,3", "--out", str(out)])
    table = capsys.readouterr().out
    rows = json.loads(out.read_text())["engine"]
    assert code == 0 and [x["streams"] for x in rows[0]["streams"]] == [1, 3]
    assert all(x["tok_s"] > 0 and len(x["runs"]) == 1 for x in rows[0]["streams"])
    assert all(0 < x["ttft_ms_p50"] <= x["ttft_ms_max"] for x in rows[0]["streams"])
    assert "| tiny (f32, random) | 3 |" in table, table
    # llvmpipe has timestamps: the GPU time of one step of 1 and of 3 decode rows
    one, three = (x["step_gpu_ms"] for x in rows[0]["streams"])
    assert 0 < one and 0 < three and rows[0]["streams"][1]["gpu_tok_s"] == pytest.approx(3e3 / three)
    # the batched engine's host split: every step of a run is counted, each of 1 to 3 decode
    # rows or a 16-token prompt chunk (the prompts' rows beside them)
    many = rows[0]["streams"][1]
    assert many["steps_per_run"] >= 6 and 1 <= many["rows_per_step"] <= 3 * 16
    assert 0 < many["host_ms_per_step"] <= many["wall_ms_per_step"]
    assert "steps_per_run" not in rows[0]["streams"][0]  # the serial scheduler has no steps to count


def test_streams_profile_replays_the_batched_step(capsys, tmp_path) -> None:
    """`--streams 3 --profile`: the per-kernel GPU time of one step of 3 decode rows, and the
    step replayed back to back in one submit, a submit each, with its table writes, and with
    read-backs."""
    import json

    out = tmp_path / "b.json"
    code = main(["bench", "--preset", "tiny", "--dtype", "f32", "--backend", "dawn", "--n-pp", "0", "--n-gen", "4",
                 "--reps", "1", "--streams", "3", "--profile", "--out", str(out)])
    text = capsys.readouterr().out
    x = json.loads(out.read_text())["engine"][0]["streams"][0]
    assert code == 0 and "batched step profile" in text
    assert {k["kernel"] for k in x["step_profile"]} >= {"sample_pick_argmax"}
    assert sum(k["count"] for k in x["step_profile"]) > 10
    assert set(x["step_ladder_ms"]) == {"one_submit", "replay", "writes", "read_backs"} and all(v > 0 for v in x["step_ladder_ms"].values())


def test_kernel_table_estimates_each_kernels_share_of_one_pass() -> None:
    """The profiles' tables: each dispatch timed in a pass of its own costs more than in one pass
    of all; where the whole pass's time is known, each kernel's share of it is estimated by
    spreading the difference over the dispatches (none where the parts add up to less)."""
    from webgpu_llm.bench.engine_bench import _kernel_table

    kernels = [{"kernel": "mv", "count": 48, "workgroups": 256, "us": 960.0}, {"kernel": "head", "count": 2, "us": 40.0}]
    table = _kernel_table(kernels, "GPU µs/token", 500.0)  # 500 µs more over 50 dispatches: 10 each
    assert "less 10.0 µs a dispatch" in table and "| 480.0 |" in table and "| 20.0 |" in table
    assert table.splitlines()[1].count("---") == 6
    assert "in one pass" not in _kernel_table(kernels, "GPU µs/token", 2000.0)
