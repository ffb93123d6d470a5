"""`webgpu-llm export`: the plan describes the Programs the Python engine runs, its weight
files are what the GPU holds, its tokenizer.json encodes like the Python tokenizer."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from web_helpers import Exported

from webgpu_llm.engine.export import PLAN_FORMAT, kernel_needs, read_plan
from webgpu_llm.errors import UserError

TEXTS = ["Hello world! How are you?", "  leading spaces and\ttabs\n\nnew lines  ", "numbers 1234567 and 3.14159",
         "ünïcödé, 日本語のテキスト, emoji 🚀🔥, Ελληνικά", "<|im_start|>user\nHi<|im_end|>\n", "def f(x):\n    return x ** 2\n"]


def test_plan_lists_every_dispatch_of_the_programs(exported: Exported) -> None:
    plan, m = exported.plan, exported.session.programs
    assert plan["format"] == PLAN_FORMAT and plan["model"]["ctx"] == 256 and plan["model"]["batch"] == 64
    assert len(plan["programs"]["decode"]) == len(m.decode.dispatches) == 1 + 5 * exported.session.cfg.n_layers
    assert len(plan["programs"]["prefill"]) == len(m.prefill.dispatches)
    assert plan["built_on"]["prefill"] == "thin"
    for i, d in enumerate(plan["programs"]["prefill"]):  # every grid equals the Python function's
        py = m.prefill.dispatches[i]
        for n in (1, 7, 16, 17, 64):
            got = d["grid"] if isinstance(d["grid"], list) else plan["grids"][d["grid"]["table"]][n - 1]
            assert tuple(got) == py.size(n), (i, n)
        k = plan["kernels"][d["kernel"]]
        assert k["wgsl"] == py.kernel.wgsl and len(d["bind"]) == len(k["bindings"])
    # what any browser offers: no f16, no subgroups, bindings within 128 MiB
    assert plan["features"] == [] and plan["limits"]["maxStorageBufferBindingSize"] <= 128 * 2**20
    assert not any("enable " in k["wgsl"] for k in plan["kernels"])
    assert plan["state"]["fields"][0] == ["pos", "u32"] and plan["state"]["words"] == 16
    assert set(plan["sampling"]["variants"]) == {"greedy", "greedy_penalty", "filtered", "filtered_penalty"}


def test_weight_files_hold_the_gpu_buffers(exported: Exported) -> None:
    plan, out, g = exported.plan, exported.out, exported.session.gpu
    files = plan["weights"]["files"]
    for f in files:
        data = (out / f["path"]).read_bytes()
        assert len(data) == f["size"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    w = exported.session.programs.weights
    emb = w.embedding.buffers[0]
    t = next(t for t in plan["weights"]["tensors"] if plan["buffers"][t["buffer"]]["name"] == emb.label)
    raw = (out / files[t["file"]]["path"]).read_bytes()[t["offset"]:t["offset"] + t["size"]]
    assert raw == bytes(g.read(emb))
    assert sum(t["size"] for t in plan["weights"]["tensors"]) == plan["model"]["weight_bytes"]
    assert all(plan["buffers"][t["buffer"]]["size"] >= t["size"] for t in plan["weights"]["tensors"])


def test_tokenizer_json_encodes_like_the_python_tokenizer(exported: Exported) -> None:
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(exported.out / "tokenizer.json"))
    tok = exported.tokenizer
    text = (Path(__file__).parents[1] / "data/eval.txt").read_text()
    assert hf.encode(text, add_special_tokens=False).ids == tok.encode(text, add_bos=False)
    info = exported.plan["tokenizer"]
    assert info["stop_ids"] == sorted(tok.stop_ids) and info["chat_template"] == tok.chat_template
    assert [s["text"] for s in info["specials"]][:1] == ["<jupyter_output>"]  # longest first


def test_kernel_needs_reads_workgroup_shape_memory_and_features() -> None:
    wgsl = ("enable f16;\nenable subgroups;\nconst WG: u32 = 128u;\nvar<workgroup> a: array<f32, 64>;\n"
            "var<workgroup> b: array<vec4<f32>, 8>;\n@compute @workgroup_size(WG, 2)\nfn main() {}\n")
    assert kernel_needs(wgsl) == {"workgroup_size": [128, 2, 1], "workgroup_bytes": 64 * 4 + 8 * 16,
                                  "features": ["shader-f16", "subgroups"], "language_features": []}
    assert kernel_needs("fn main() { let d = dot4I8Packed(a, b); }")["language_features"] == \
        ["packed_4x8_integer_dot_product"]


def test_read_plan_rejects_what_is_not_an_export(tmp_path: Path, exported: Exported) -> None:
    assert read_plan(exported.out / "plan.json")["version"] == 1
    (tmp_path / "plan.json").write_text(json.dumps({"format": "something"}))
    with pytest.raises(UserError, match="not a webgpu-llm export"):
        read_plan(tmp_path / "plan.json")
    with pytest.raises(UserError, match="not a webgpu-llm export"):
        read_plan(tmp_path / "missing.json")


def test_prefill_thin_and_tiled_agree(exported: Exported) -> None:
    """The plan's thin prefill gives the logits of the engine's tiled one (f32, other order)."""
    from webgpu_llm.engine.export import prefill_logits

    s, ids = exported.session, exported.tokenizer.encode("The three primary colors are")
    thin = prefill_logits(s, ids)
    plan_prefill, s.programs.prefill = s.programs.prefill, s.programs.prompt_program()  # the engine's tiled layers
    try:
        tiled = prefill_logits(s, ids)
    finally:
        s.programs.prefill = plan_prefill
    assert np.abs(thin - tiled).max() < 1e-3 * np.abs(tiled).max()


def test_export_refuses_an_embedding_model(tmp_path: Path) -> None:
    from reference_encoders import make_tiny_encoder_dir
    from webgpu_llm.engine.export import build_session

    make_tiny_encoder_dir(tmp_path / "bert", "bert", seed=1)
    with pytest.raises(UserError, match=r"embedding model .* text-generation models only"):
        build_session(tmp_path / "bert", ctx=64)


def test_export_command(tmp_path: Path) -> None:
    from model_files import smollm2_or_skip

    smollm2_or_skip()
    r = subprocess.run([sys.executable, "-m", "webgpu_llm.cli.main", "export", "--out", str(tmp_path),
                        "--ctx", "64", "--tuning", "cpu", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["dispatches_per_token"] == 1 + 5 * 30 + 1 + 2 and summary["files"]
    assert read_plan(tmp_path / "plan.json")["model"]["ctx"] == 64
    bad = subprocess.run([sys.executable, "-m", "webgpu_llm.cli.main", "web", "--plan", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a webgpu-llm export" in bad.stderr
    # serve --web-plan checks the export before loading anything (tests/server: --web in a browser)
    for args in (["--web-plan", str(tmp_path / "nope")], ["--web", "--web-plan", str(tmp_path)]):
        bad = subprocess.run([sys.executable, "-m", "webgpu_llm.cli.main", "serve", "--port", "0", *args],
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and ("not a webgpu-llm export" in bad.stderr or "not both" in bad.stderr), bad.stderr


def test_every_weight_of_a_mixture_of_experts_is_exported(tmp_path: Path) -> None:
    """A layer's weights are found by type, not by name: a MoE layer's router and experts go
    into the weight files like the dense layers' matrices (none would be zeros in the page)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import preset_gguf

    from webgpu_llm.engine.export import build_session, write_plan

    assert preset_gguf.main(["tiny-moe", "q4_0", str(tmp_path / "m.gguf")]) == 0
    src, session = build_session(tmp_path / "m.gguf", ctx=64)
    try:
        plan = write_plan(src, session, tmp_path / "out")
    finally:
        src.close()
    names = {plan["buffers"][t["buffer"]]["name"] for t in plan["weights"]["tensors"]}
    w = session.programs.weights
    for L in w.layers:
        assert L.router is not None
        for mat in (L.router, L.gate_up, L.down):
            assert {b.label for b in mat.buffers} <= names
