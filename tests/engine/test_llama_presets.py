"""Newer families and weight types against llama.cpp: bench presets cut to a few layers (Gemma
3 and Gemma 2 with 64-key windows, Phi-4-mini, Qwen3, Qwen3-MoE, gpt-oss with MXFP4 experts,
SmolLM3, Llama 3; the K- and I-quants on Qwen3), written as GGUF by bench/preset_gguf.py and run by
llama.cpp on the CPU once (tests/fixtures/make_llama_presets.py keeps its logits). The engine
reads the same file: its logits within a small part of their scale of llama.cpp's (which rounds
the activations to 8 bits for quantized weights, as the engine's decode does), and the same
greedy token wherever llama.cpp's margin is not within that rounding; and a decode step after
the prompt (the decode kernels) as llama.cpp's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))

import make_llama_presets as mk

from webgpu_llm.api import LLM

REF = json.loads((Path(__file__).parents[1] / "fixtures/reference/llama_presets.json").read_text())
# relative to the logits' largest magnitude: llama.cpp rounds the activations to 8 bits for
# quantized weights (the prompt's too, where the engine's prompt does not); measured 2026-12-05 on
# llvmpipe, with the sharp attention of the files: 1.5e-4 (Llama 3 q4_k) to 1.5e-2 (gpt-oss,
# Qwen3 q6_k) over the prompt, up to 2.4e-2 (q6_k) in the decode step; a wrong block layout,
# head order or window is off by O(1) (gpt-oss with its windows ignored: 0.66). Gemma's output
# norms let attention move the logits little (Gemma 2 with its windows ignored: 5e-3, with its
# soft-caps ignored 9e-3): there these cases check layouts and norms, the transformers tests the rest
TOL = 5e-2
CASES = {c[0]: c for c in mk.CASES}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("llama-presets")


@pytest.mark.parametrize("name", list(CASES))
def test_logits_match_llama_cpp(wgpu_gpu, files, name):
    ref = REF["cases"][name]
    path = mk.case_file(files, CASES[name])
    assert mk.sha256(path) == ref["sha256"], "the preset's file changed: rerun tests/fixtures/make_llama_presets.py"
    llm = LLM.load(path, gpu=wgpu_gpu, ctx=256, progress=False)
    path.unlink()  # up to 218 MB each; the weights are on the GPU now
    got = np.asarray(llm.logits(REF["ids"]), np.float32)
    want = np.asarray(ref["logits"], np.float32)
    diff = float(np.abs(got[REF["rows"]] - want).max())
    assert diff / float(np.abs(want).max()) < TOL, diff
    sure = np.asarray(ref["margin"]) > 2 * diff  # choices the rounding seen cannot flip
    assert sure.any()
    assert np.array_equal(got.argmax(1)[sure], np.asarray(ref["argmax"])[sure])
    # the decode kernels: one step after the prompt (past gpt-oss's window), its input given
    step = llm.session.next_logits(REF["ids"], REF["step_token"])
    want = np.asarray(ref["step"], np.float32)
    assert float(np.abs(step - want).max()) / float(np.abs(want).max()) < TOL
