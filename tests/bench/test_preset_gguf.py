"""bench/preset_gguf.py writes a preset's random weights as a GGUF file: loaded back, the file
is the preset (its config, types, and the same logits)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import preset_gguf

from webgpu_llm.engine import Session, Settings
from webgpu_llm.models.presets import preset_model
from webgpu_llm.models.source import open_model


def test_the_file_is_the_preset(wgpu_gpu, tmp_path):
    out = tmp_path / "tiny-moe.gguf"
    assert preset_gguf.main(["tiny-moe", "q4_0", str(out)]) == 0
    cfg, tensors = preset_model("tiny-moe", "q4_0")
    src = open_model(out)
    assert src.config.architecture.moe == cfg.architecture.moe and src.config.n_layers == cfg.n_layers
    assert src.tensors["blk.0.ffn_gate_exps.weight"].shape == (8, 128, 256)
    assert src.tensors["blk.0.ffn_gate_exps.weight"].fmt == "q4_0"
    ids = [5, 99, 1000, 7, 3000]
    # (a qwen3moe file's Q/K rows are in rotate-half order: read the preset's alike)
    cfg = dataclasses.replace(cfg, rope_neox=src.config.rope_neox)
    want = Session.build(wgpu_gpu, cfg, tensors.get, Settings(batch=8), 16).logits(ids)
    got = Session.build(wgpu_gpu, src.config, src.tensors.get, Settings(batch=8), 16).logits(ids)
    src.close()
    assert np.array_equal(got, want)


def test_unknown_preset_is_one_line(capsys, tmp_path):
    assert preset_gguf.main(["nope", "q4_0", str(tmp_path / "x.gguf")]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_a_cut_file_keeps_the_layer_shapes(tmp_path):
    out = tmp_path / "oss.gguf"
    assert preset_gguf.main(["gpt-oss-20b", "mxfp4", str(out), "--layers", "1", "--vocab", "300", "--experts", "2"]) == 0
    src = open_model(out)
    c = src.config
    assert (c.n_layers, c.vocab, c.hidden, c.architecture.moe.count, c.architecture.moe.used) == (1, 300, 2880, 2, 2)
    assert src.tensors["blk.0.ffn_down_exps.weight"].shape == (2, 2880, 2880)
    assert src.tensors["blk.0.ffn_down_exps.weight"].fmt == "mxfp4"
    src.close()
    assert preset_gguf.main(["qwen2.5-0.5b", "q4_0", str(tmp_path / "x.gguf"), "--experts", "2"]) == 2
