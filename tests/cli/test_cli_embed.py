"""`webgpu-llm embed`: texts from the argument, a file or stdin, JSON out equal to LLM.embed;
bad input is one line and exit code 2, before the model loads where it can be."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_files import minilm_or_skip
from webgpu_llm.api import LLM
from webgpu_llm.cli.main import main


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code, _, err = run_cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    return lines[0]


def test_bad_input_before_the_model_loads(capsys, tmp_path, monkeypatch):
    m = str(tmp_path)  # an empty folder, which fails to load with another message: each case is caught before
    assert "empty" in one_line(capsys, "embed", "-m", m, "")
    assert "empty" in one_line(capsys, "embed", "-m", m, "   ")
    assert "is a directory" in one_line(capsys, "embed", "-m", m, "--file", str(tmp_path))
    assert "no such file" in one_line(capsys, "embed", "-m", m, "--file", str(tmp_path / "none.txt"))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n", encoding="utf-8")
    assert f"no text in {blank}" in one_line(capsys, "embed", "-m", m, "--file", str(blank))
    assert "either as an argument or with --file" in one_line(capsys, "embed", "-m", m, "--file", str(blank), "hi")
    assert "--ctx" in one_line(capsys, "embed", "-m", m, "--ctx", "1", "hi")
    assert "no-such-org/no-such-model" in one_line(capsys, "embed", "-m", "no-such-org/no-such-model", "hi")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert "no text in stdin" in one_line(capsys, "embed", "-m", m)


def test_embed_json_from_text_file_and_stdin(capsys, tmp_path, wgpu_gpu):
    model = str(minilm_or_skip())
    code, out, err = run_cli(capsys, "embed", "-m", model, "Hello world.")
    assert code == 0 and "1 texts" in err and "tokens/s" in err
    one = json.loads(out)
    assert set(one) == {"model", "data", "dim"} and one["dim"] == 384 and len(one["data"]) == 1
    assert one["data"][0]["index"] == 0 and len(one["data"][0]["embedding"]) == 384
    texts = tmp_path / "texts.txt"
    texts.write_text("Hello world.\n\nThe quick brown fox.\n  \nA third one\n", encoding="utf-8")
    code, out, err = run_cli(capsys, "embed", "-q", "-m", model, "--file", str(texts))
    assert code == 0 and err == ""
    many = json.loads(out)
    assert [d["index"] for d in many["data"]] == [0, 1, 2]
    vectors = np.array([d["embedding"] for d in many["data"]], np.float32)
    assert np.abs(vectors[0] - np.array(one["data"][0]["embedding"], np.float32)).max() < 1e-6
    llm = LLM.load(model, gpu=wgpu_gpu, progress=False)
    try:
        want = llm.embed(["Hello world.", "The quick brown fox.", "A third one"])
    finally:
        llm.close()
    assert np.abs(vectors - want).max() < 1e-6  # the CLI's JSON holds the float32 values exactly
    p = subprocess.run([sys.executable, "-m", "webgpu_llm.cli.main", "embed", "-q", "-m", model],
                       input="Hello world.\nThe quick brown fox.\nA third one", capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["data"] == many["data"]


def test_embed_refusals_are_one_line(capsys, tmp_path):
    model = str(minilm_or_skip())
    long = "word " * 300
    assert "more than the 256 this model takes" in one_line(capsys, "embed", "-m", model, long)
    assert "--truncate" in one_line(capsys, "embed", "-m", model, "--ctx", "8", "a b c d e f g h i j")
    code, out, _ = run_cli(capsys, "embed", "-q", "-m", model, "--ctx", "8", "--truncate", "a b c d e f g h i j")
    assert code == 0 and json.loads(out)["dim"] == 384
    assert "is an embedding model (bert): it cannot generate text" in one_line(capsys, "generate", "-m", model, "hi")


def test_embed_on_a_text_generation_model(capsys, tmp_path):
    pytest.importorskip("transformers")
    from reference_models import make_tiny_llama

    tiny: Path = make_tiny_llama(tmp_path / "llama")
    capsys.readouterr()  # (transformers' progress)
    assert "is a text-generation model (llama), not an embedding model" in one_line(
        capsys, "embed", "-m", str(tiny), "hi")
