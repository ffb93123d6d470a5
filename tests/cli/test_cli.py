"""The command line: every subcommand end to end on a tiny model, JSON output, and bad input
(one-line errors, exit code 2 for the user's mistakes, 1 for runtime failures, no traceback)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from webgpu_llm.cli.main import main
from webgpu_llm.environment import VALIDATE

pytest.importorskip("transformers")
from model_files import smollm2_or_skip
from reference_models import hf_logits, make_tiny_llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), seed=5)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json(capsys):
    code, out, _ = run_cli(capsys, "info", "--json")
    assert code == 0
    report = json.loads(out)
    assert {b["backend"] for b in report["backends"]} == {"wgpu", "dawn"}
    assert any(a["limits"]["max-storage-buffer-binding-size"] > 0 for b in report["backends"] for a in b["adapters"])
    dawn = next(b for b in report["backends"] if b["backend"] == "dawn")
    assert dawn["command_validation"] is True  # the tests run with WEBGPU_LLM_VALIDATE=1 (conftest.py)
    assert all(isinstance(a["subgroup_matrix_configs"], list) for b in report["backends"] for a in b["adapters"])


def test_info_check_runs_the_kernels_checks(capsys):
    """`info --check`: each adapter opened and the kernels' self-checks run. llvmpipe lists no
    matrix tiles (n/a); Dawn's f16 mat-vec runs and matches numpy; wgpu-native's naga cannot
    compile it (n/a)."""
    code, out, _ = run_cli(capsys, "info", "--check", "--json")
    assert code == 0
    by = {b["backend"]: b["adapters"] for b in json.loads(out)["backends"]}
    for a in (a for adapters in by.values() for a in adapters):
        assert set(a["checks"]) <= {"f16_tiles", "f16_matvec", "error"}, a["checks"]
    vk = [a for a in by["dawn"] if "shader-f16" in a["features"]]
    assert vk and all(a["checks"]["f16_matvec"] == "pass" for a in vk)
    assert all(a["checks"].get("f16_matvec", "n/a") == "n/a" for a in by["wgpu"])
    assert "checks: f16 tiles" in run_cli(capsys, "info", "--check", "--backend", "dawn")[1]


def test_info_matrix_line():
    """What `info` says of an adapter's matrix tiles (an H200 on Dawn lists these four without
    the f16 toggle, and an f16 one with it)."""
    from webgpu_llm.cli.info import matrix_line

    cfg = [{"component_type": t, "result_component_type": r, "m": 16, "n": n, "k": 32, "min_subgroup_size": 32,
            "max_subgroup_size": 32} for t, r in (("u8", "u32"), ("i8", "i32")) for n in (16, 8)]
    assert matrix_line(cfg) == ("matrix tiles: u8->u32 16x16x32, u8->u32 16x8x32, i8->i32 16x16x32, i8->i32 16x8x32; "
                                "quantized prompts run on the i8 16x16x32 tiles")
    assert matrix_line(cfg[1:2]).endswith("not used (no i8 16x16x32 or f16->f32 16x16x16 tile)")
    f16 = {**cfg[0], "component_type": "f16", "result_component_type": "f32", "k": 16}
    assert matrix_line([*cfg, f16]).endswith("i8->i32 16x8x32, f16->f32 16x16x16; prompts of every format but f32 "
                                             "run on the f16->f32 16x16x16 tiles (quantized weights dequantized while "
                                             "staging; also the server's batched steps of up to 64 rows, and the prompt "
                                             "attention for heads of 64 dimensions and more); the i8 16x16x32 tiles "
                                             "where the f16 ones fail their check")


def test_generate_json_and_stream(capsys, tiny):
    code, out, _ = run_cli(capsys, "generate", "--model", str(tiny), "--raw", "--max-tokens", "5", "--json", "hello")
    assert code == 0
    r = json.loads(out)
    assert r["generated_tokens"] <= 5 and isinstance(r["text"], str) and r["prompt_tokens"] > 0
    code, out, err = run_cli(capsys, "generate", "-m", str(tiny), "--max-tokens", "3", "--seed", "1", "-t", "0.8",
                             "hello")
    assert code == 0 and "generated at" in err


def test_perplexity_json_matches_transformers(capsys, tiny, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 6)
    code, out, _ = run_cli(capsys, "perplexity", "-m", str(tiny), "--file", str(text), "--ctx", "16", "--json")
    assert code == 0
    r = json.loads(out)
    from webgpu_llm.tokenizer import load_tokenizer_from_dir

    ids = load_tokenizer_from_dir(tiny).encode(text.read_text())
    assert r["tokens"] == len(ids) and len(r["chunks"]) == -(-len(ids) // 16)
    nll = []
    for c0 in range(0, len(ids), 16):
        chunk = ids[c0:c0 + 16]
        if len(chunk) < 2:
            continue
        lg = hf_logits(tiny, chunk).astype(np.float64)
        ls = lg - lg.max(-1, keepdims=True)
        ls -= np.log(np.exp(ls).sum(-1, keepdims=True))
        nll += list(-ls[np.arange(len(chunk) - 1), chunk[1:]])
    assert r["ppl"] == pytest.approx(float(np.exp(np.mean(nll))), rel=1e-4)


def test_ctx_cap_is_reported_and_0_is_the_models_maximum(capsys, tiny, tmp_path):
    code, _, err = run_cli(capsys, "generate", "-m", str(tiny), "--raw", "--max-tokens", "2", "--ctx", "100000", "hi")
    assert code == 0 and "note: --ctx 100000 is capped to the model's 256\n" in err  # max_position_embeddings
    code, out, err = run_cli(capsys, "generate", "-m", str(tiny), "--raw", "--max-tokens", "2", "--ctx", "100000",
                             "--json", "hi")
    assert code == 0 and "note" not in err and json.loads(out)["generated_tokens"] >= 1
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    code, out, err = run_cli(capsys, "perplexity", "-m", str(tiny), "--file", str(text), "--ctx", "0", "--json")
    assert code == 0 and json.loads(out)["ctx"] == 256 and "note" not in err


def test_truncate_keeps_room_for_max_tokens(capsys, tiny):
    code, out, _ = run_cli(capsys, "generate", "-m", str(tiny), "--raw", "--ctx", "16", "--max-tokens", "5",
                           "--truncate", "-t", "0", "--json", "word " * 40)
    assert code == 0
    r = json.loads(out)
    assert r["prompt_tokens"] == 11 and 1 <= r["generated_tokens"] <= 5


def test_chat_reads_turns_from_stdin(tiny):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, "-m", "webgpu_llm.cli.main", "chat", "-m", str(tiny), "--max-tokens", "3",
                        "--temperature", "0", "-q"], input="hi\nagain\n/exit\n", capture_output=True, text=True,
                       env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.splitlines()) == 2


def test_bench_json_on_a_file(capsys, tiny, monkeypatch):
    monkeypatch.setenv("WEBGPU_LLM_TUNING", "attn_chunk=48")
    code, out, _ = run_cli(capsys, "bench", "-m", str(tiny), "--n-gen", "4", "--n-pp", "8", "--ttft", "20", "--reps", "1",
                           "--json")
    assert code == 0
    row = json.loads(out)["engine"][0]
    assert row["tuning_overrides"] == {"attn_chunk": "48"}
    assert row["tg_tok_s"] > 0 and row["pp_tok_s"] > 0 and row["dispatches_per_token"] > 0
    assert row["n_ttft"] == 20 and row["ttft_ms"] > 0 and row["prompt_attention"] == "simt"
    assert row["prompt_batch"] == 16 and row["multiprocessors"] == 0  # (--n-pp, at least 16; llvmpipe: no waves model)
    assert row["prompt_matmul"]["qkv"] in ("simt", "f16")  # float weights: never the int8 tiles
    # the prompt attention on the (emulated) f16 tiles, its keys in three parts a block
    monkeypatch.setenv("WEBGPU_LLM_TUNING", "mma='emulate';attn_tiles=True;attn_splits=3")
    code, out, _ = run_cli(capsys, "bench", "--preset", "tiny", "--dtype", "f16", "--n-gen", "2", "--n-pp", "40",
                           "--reps", "1", "--json")
    row = json.loads(out)["engine"][0]
    assert code == 0 and row["pp_tok_s"] > 0 and row["prompt_attention"] == "f16 tiles, keys in 3 parts"
    # every prompt matmul on the f16 tiles says their workgroup shape
    tiled = {r for r, p in row["prompt_matmul"].items() if p.startswith("f16")}
    assert tiled and set(row["prompt_tiles"]) == tiled, row
    assert all(re.fullmatch(r"\d+x\d+x\d+x\d+( .+)?", t) for t in row["prompt_tiles"].values()), row


def test_bench_compares_prompt_matmuls(capsys):
    """`--mma auto,off`: a row each; a q8_0 model's prompt takes the int8 tiles where the adapter
    has them."""
    from webgpu_llm.kernels.mma import usable
    from webgpu_llm.runtime.gpu import open_gpu

    code, out, _ = run_cli(capsys, "bench", "--preset", "tiny", "--dtype", "q8_0", "--backend", "dawn", "--n-gen", "4",
                           "--n-pp", "8", "--reps", "1", "--mma", "auto,off", "--json")
    assert code == 0
    rows = json.loads(out)["engine"]
    on = "int8" if usable(open_gpu("dawn")) else "simt"
    assert [set(r["prompt_matmul"].values()) for r in rows] == [{on}, {"simt"}]
    assert [r["mma"] for r in rows] == ["auto", "off"]


def test_bench_compares_tunings_in_one_process(capsys):
    """`--tuning '' --tuning 'fold_route=True'`: a row each, the weights loaded once, the second
    with a dispatch less a layer (each expert gate/up workgroup choosing the experts); a field
    that is not a Tuning's is a one-line error."""
    code, out, err = run_cli(capsys, "bench", "--preset", "tiny-moe", "--dtype", "q8_0", "--backend", "wgpu", "--n-gen",
                             "4", "--n-pp", "8", "--reps", "1", "--tuning", "", "--tuning", "fold_route=True", "--json")
    assert code == 0 and "once for 2 variants" in err
    rows = json.loads(out)["engine"]
    assert [r["tuning"] for r in rows] == ["", "fold_route=True"]
    assert rows[0]["dispatches_per_token"] - rows[1]["dispatches_per_token"] == 2  # (tiny-moe: 2 layers)
    assert "fold_rout" in _fails(capsys, 2, "bench", "--preset", "tiny", "--tuning", "fold_rout=True")


def test_bench_context_as_generate_builds_it(capsys):
    """`--ctx`: the model built with that context (its decode attention's grid for it, the
    JSON saying so), the same tokens timed; one too short for the runs is a one-line error."""
    code, out, _ = run_cli(capsys, "bench", "--preset", "tiny", "--n-gen", "4", "--n-pp", "0", "--reps", "1",
                           "--ctx", "4096", "--json")
    row = json.loads(out)["engine"][0]
    assert code == 0 and row["ctx"] == 4096 and row["tg_tok_s"] > 0
    code, out, _ = run_cli(capsys, "bench", "--preset", "tiny", "--n-gen", "4", "--n-pp", "0", "--reps", "1", "--json")
    assert code == 0 and json.loads(out)["engine"][0]["ctx"] == 16 + 4 + 8
    assert "need 28 tokens" in _fails(capsys, 2, "bench", "--preset", "tiny", "--n-gen", "4", "--n-pp", "0",
                                      "--ctx", "20")


def _fails(capsys, code_expected: int, *args: str) -> str:
    code, _, err = run_cli(capsys, *args)
    assert code == code_expected, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_bad_input_gives_one_line_and_exit_2(capsys, tiny, tmp_path):
    assert "no such file" in _fails(capsys, 2, "generate", "--model", str(tmp_path / "nope.gguf"), "hi")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a model file at all" * 10)
    assert "junk.gguf" in _fails(capsys, 2, "generate", "--model", str(junk), "hi")
    assert "context" in _fails(capsys, 2, "generate", "-m", str(tiny), "--ctx", "8", "--raw", "word " * 40)
    assert "top-p" in _fails(capsys, 2, "generate", "-m", str(tiny), "--top-p", "2", "-t", "1", "hi")
    assert "empty" in _fails(capsys, 2, "generate", "-m", str(tiny), "")
    assert "no such file" in _fails(capsys, 2, "perplexity", "-m", str(tiny), "--file", str(tmp_path / "none.txt"))
    notok = tmp_path / "notok"
    notok.mkdir()
    for f in ("config.json", "model.safetensors"):
        (notok / f).write_bytes((tiny / f).read_bytes())
    _fails(capsys, 2, "generate", "-m", str(notok), "hi")  # no tokenizer
    assert "--persist" in _fails(capsys, 2, "bench", "-m", str(tiny), "--persist", "many")
    assert "--mma" in _fails(capsys, 2, "bench", "-m", str(tiny), "--mma", "on")
    assert "--attn-tiles takes auto" in _fails(capsys, 2, "bench", "-m", str(tiny), "--attn-tiles", "yes")


def test_bad_persist_setting_is_one_line(capsys, tiny, monkeypatch):
    monkeypatch.setenv("WEBGPU_LLM_PERSIST", "lots")
    assert "WEBGPU_LLM_PERSIST" in _fails(capsys, 2, "generate", "-m", str(tiny), "--raw", "hi")


def test_truncated_gguf_and_unsupported_architecture(capsys, tmp_path):
    from gguf import GGUFWriter

    w = GGUFWriter(tmp_path / "falcon.gguf", "falcon")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert "falcon" in _fails(capsys, 2, "generate", "-m", str(tmp_path / "falcon.gguf"), "hi")
    src = smollm2_or_skip()
    cut = tmp_path / "cut.gguf"
    with open(src, "rb") as f:
        cut.write_bytes(f.read(5_000_000))
    assert "truncated" in _fails(capsys, 2, "generate", "-m", str(cut), "hi")


def test_bad_option_is_an_argparse_error():
    p = subprocess.run([sys.executable, "-m", "webgpu_llm.cli.main", "generate", "--no-such-option"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr


def test_no_vulkan_driver_is_a_runtime_error(tiny):
    """With the Vulkan loader pointed at no driver there is no adapter: exit 1, say what to install."""
    env = {**os.environ, "VK_ICD_FILENAMES": "/nonexistent.json", "VK_DRIVER_FILES": "/nonexistent.json",
           "WGPU_BACKEND_TYPE": "Vulkan"}
    p = subprocess.run([sys.executable, "-m", "webgpu_llm.cli.main", "generate", "-m", str(tiny), "--backend", "dawn",
                        "hi"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and "mesa-vulkan-drivers" in p.stderr


@pytest.mark.slow
def test_dawn_skips_command_validation_by_default_with_the_same_tokens(capsys, tiny):
    """Users' Dawn devices skip command validation (the tests keep it, see conftest.py): the
    toggle is on in a default process, and greedy tokens equal the validated run's."""
    code, out, _ = run_cli(capsys, "generate", "-m", str(tiny), "--backend", "dawn", "--raw", "--max-tokens", "6",
                           "--json", "hello")
    assert code == 0
    validated = json.loads(out)["text"]
    env = {k: v for k, v in os.environ.items() if k != VALIDATE}
    check = ("from webgpu_llm.runtime.gpu import open_gpu; from wgpudawn.backends.dawn import extras; "
             "print('skip_validation' in extras.get_toggles(open_gpu('dawn').device))")
    p = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=120)
    assert p.stdout.strip().splitlines()[-1] == "True", p.stderr
    p = subprocess.run([sys.executable, "-m", "webgpu_llm.cli.main", "generate", "-m", str(tiny), "--backend", "dawn",
                        "--raw", "--max-tokens", "6", "--json", "hello"], capture_output=True, text=True, env=env,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["text"] == validated


def test_bad_tuning_setting_is_one_line(capsys, tiny, monkeypatch):
    monkeypatch.setenv("WEBGPU_LLM_TUNING", "no_such_field=1")
    err = _fails(capsys, 2, "generate", "-m", str(tiny), "--raw", "hi")
    assert "WEBGPU_LLM_TUNING" in err and "no_such_field" in err
    monkeypatch.setenv("WEBGPU_LLM_TUNING", "f16_decode=yes please")
    assert "literal" in _fails(capsys, 2, "generate", "-m", str(tiny), "--raw", "hi")
    # a known field with a value the engine refuses: one line too, not an internal error
    for value, says in (("mma='x'", "Tuning.mma"), ("stream_group=0", "Tuning.stream_group"),
                        ("splits=(('head',2),)", "Tuning.splits"), ("batch_splits=(('down',17),)", "Tuning.batch_splits"),
                        ("stage_depth=3", "depth is 1 or 2"), ("batch_tiles=(1,4,1,2,False,False,1,True,3)", "Tuning.batch_tiles"),
                        ("attn_splits=0", "Tuning.attn_splits"), ("attn_splits=33", "Tuning.attn_splits")):
        monkeypatch.setenv("WEBGPU_LLM_TUNING", value)
        err = _fails(capsys, 2, "generate", "-m", str(tiny), "--raw", "hi")
        assert says in err and "WEBGPU_LLM_TUNING" in err, err


def test_tuning_overrides_reach_the_model(wgpu_gpu):
    from webgpu_llm import environment

    s = environment.settings({"WEBGPU_LLM_TUNING": "thin_rows=17; attn_chunk=48"})
    t = s.tuning_for(wgpu_gpu, 64, 16)
    assert (t.thin_rows, t.attn_chunk) == (17, 48)
    assert environment.settings({}).tuning_for(wgpu_gpu, 64, 16).thin_rows != 17


def test_dawn_toggles_from_the_environment(capsys, monkeypatch):
    """WEBGPU_LLM_DAWN_TOGGLES: an unknown name is one line and exit 2; a known one reaches the
    options ("-name" turning it off)."""
    from webgpu_llm import environment

    o = environment.gpu_options({"WEBGPU_LLM_DAWN_TOGGLES": " disable_workgroup_init, -use_vulkan_memory_model "})
    assert o.dawn_toggles == ("disable_workgroup_init", "-use_vulkan_memory_model")
    assert environment.gpu_options({}).dawn_toggles == ()
    monkeypatch.setenv("WEBGPU_LLM_DAWN_TOGGLES", "no_such_toggle")
    err = _fails(capsys, 2, "info", "--backend", "dawn")
    assert "no_such_toggle" in err and "WEBGPU_LLM_DAWN_TOGGLES" in err


def test_dawn_bounds_checks_follow_the_adapter_and_the_environment(capsys, monkeypatch):
    """Dawn devices keep WebGPU's bounds checks on a CPU adapter and drop them on a GPU;
    WEBGPU_LLM_ROBUST=1/0 says either way (and `info` tells which); another value is a user error."""
    from dataclasses import replace

    from webgpu_llm import environment
    from webgpu_llm.errors import UserError, WebGpuLlmError
    from webgpu_llm.runtime.gpu import open_gpu

    assert environment.gpu_options({"WEBGPU_LLM_ROBUST": "0"}).robust is False
    assert environment.gpu_options({"WEBGPU_LLM_ROBUST": "1"}).robust is True
    with pytest.raises(UserError, match="WEBGPU_LLM_ROBUST"):
        environment.gpu_options({"WEBGPU_LLM_ROBUST": "yes"})
    o = environment.gpu_options({}, backend="dawn")
    assert o.robust is None
    try:
        auto, on, off = (open_gpu(options=replace(o, robust=r)) for r in (None, True, False))
    except WebGpuLlmError as e:
        pytest.skip(f"no Dawn adapter: {e}")
    assert auto.options.robust is auto.is_cpu and on.options.robust and off.options.robust is False
    assert "disable_robustness" in off.toggles and "disable_robustness" not in on.toggles
    assert ("disable_robustness" in auto.toggles) is not auto.is_cpu
    for value, want in (("0", False), ("1", True), ("", auto.is_cpu)):
        monkeypatch.setenv("WEBGPU_LLM_ROBUST", value)
        code, out, _ = run_cli(capsys, "info", "--backend", "dawn", "--json")
        assert code == 0 and json.loads(out)["backends"][0]["adapters"][0]["bounds_checks"] is want
