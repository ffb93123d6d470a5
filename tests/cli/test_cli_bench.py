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
                                               ("--reps", "0")])
def test_bad_counts_are_one_line_errors(capsys, option: str, value: str) -> None:
    code = main(["bench", "--preset", "tiny", "--backend", "wgpu", option, value])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and option in err, err
