"""Whole models against Hugging Face transformers on the CPU: tiny random Llama/Qwen2 models
with odd sizes and GQA (safetensors and GGUF, f32 and f16), and the engine's paths that must
agree with each other (fused/unfused decode, split bindings, chat cache reuse)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from reference_models import (
    hf_greedy,
    hf_logits,
    make_tiny_gguf,
    make_tiny_llama,
    make_tiny_llama3,
    make_tiny_qwen2,
    max_rel,
    tiny_model_dirs,
)
from webgpu_llm.api import LLM
from webgpu_llm.engine import SamplingParams, Session, Settings
from webgpu_llm.errors import UserError
from webgpu_llm.runtime.gpu import open_gpu

BUILDERS = {"llama": make_tiny_llama, "qwen2": make_tiny_qwen2, "llama3": make_tiny_llama3}
IDS = [5, 17, 300, 999, 42, 7, 7, 7, 128, 64, 1000, 3, 250, 251, 252, 9, 11, 600, 2, 77, 18, 19, 401]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return tiny_model_dirs(tmp_path_factory, BUILDERS, seed=3)


def _step_logits(eng: Session) -> np.ndarray:
    """The logits of one decode step after the prompt IDS[:9] (the engine's current Programs)."""
    return eng.next_logits(IDS[:9])


def _load(path, gpu, **kw):
    return LLM.load(path, gpu=gpu, ctx=kw.pop("ctx", 64), progress=False, **kw)


@pytest.mark.parametrize("arch", list(BUILDERS))
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("float16", 1e-2)])
def test_logits_match_transformers(gpu, tiny_dirs, arch, dtype, tol):
    d = tiny_dirs[arch, dtype]
    llm = _load(d, gpu, batch=16)  # 23 tokens: two prompt batches, the second ragged
    got = llm.logits(IDS)
    assert max_rel(got, hf_logits(d, IDS)) < tol


@pytest.mark.parametrize("arch", list(BUILDERS))
@pytest.mark.parametrize("ftype,tol", [(None, 1e-4), ("f16", 1e-2)])
def test_gguf_logits_match_transformers(wgpu_gpu, tiny_dirs, tmp_path, arch, ftype, tol):
    """The same weights through GGUF: llama.cpp's Q/K row order, rope_freqs for llama3."""
    d = tiny_dirs[arch, "float32"]
    path = make_tiny_gguf(tmp_path / "m.gguf", d, ftype)
    llm = _load(path, wgpu_gpu)
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < tol


def test_split_k_prompt_matmuls_match_transformers(gpu, tiny_dirs):
    """O and down projections with K split over workgroups: their residual add moves into
    the next RMSNorm (and a last add after the final layer)."""
    import dataclasses

    d = tiny_dirs["qwen2", "float32"]
    llm = _load(d, gpu, batch=16)
    llm.session.rebuild(dataclasses.replace(llm.session.tuning, splits=(("o", 2), ("down", 3))))
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < 1e-4
    # QKV (bias, RoPE, the KV append) and gate/up (SiLU·mul) too: their epilogues on the sums
    llm.session.rebuild(dataclasses.replace(llm.session.tuning, splits=(("qkv", 2), ("gate_up", 3), ("down", 2))))
    labels = [d.label for d in llm.session.programs.prefill.dispatches]
    assert sum(x.startswith("split_finish_") for x in labels) == 2 * llm.session.cfg.n_layers, labels
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < 1e-4


def _on_emulated_f16_tiles(gpu, preset: str, **tuning):
    """A preset's f16 model built with a GPU's prompt path, emulated (the f16 tiles, f16 rows
    of x, no thin matmuls, no K splits, not even the waves model's; `tuning` besides): its
    config, its Session rebuilt so, and that tuning."""
    import dataclasses

    from webgpu_llm.models.presets import preset_model

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    cfg, tensors = preset_model(preset, "f16")
    eng = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=64)
    base = dataclasses.replace(eng.programs.tuning, mma="emulate-f16", x_f16=True, thin_rows=0, splits=(), sms=0,
                               **tuning)
    eng.rebuild(base)
    return cfg, eng, base


@pytest.mark.parametrize("preset", ["tiny", "tiny-qwen3"])
def test_split_qkv_and_gate_up_on_f16_tiles_with_f16_rows(gpu, preset):
    """A GPU's prompt path (f16 tiles, emulated here; f16 rows of x, gate/up writing f16s for
    down) with QKV and gate/up split over K: the partial sums stay f32 and their epilogue
    kernels write what the unsplit matmuls did (Qwen3's per-head norms sum QKV's partials)."""
    import dataclasses

    cfg, eng, base = _on_emulated_f16_tiles(gpu, preset)
    assert "_xh" in next(d.label for d in eng.programs.prefill.dispatches if d.label.startswith("f16_matmul"))
    want = _step_logits(eng)
    eng.rebuild(dataclasses.replace(base, splits=(("qkv", 2), ("gate_up", 3))))
    labels = [d.label for d in eng.programs.prefill.dispatches]
    assert sum("f16_matmul_partial" in x for x in labels) == 2 * cfg.n_layers, labels
    # (gate/up's outputs are rounded to f16s: a sum taken in another order may round to the
    # f16 beside, 2^-11 of it)
    assert max_rel(_step_logits(eng), want) < 1e-3


def test_splits_that_fill_the_waves_on_f16_tiles(gpu, monkeypatch):
    """Tuning.sms: each prompt matmul on the f16 tiles splits K as engine/waves.py's model says
    for that many multiprocessors (the tiny model's few workgroups on 64 of them: O and down,
    whose walks are long beside QKV's and gate/up's epilogue dispatch), with the logits of the
    unsplit prompt; on the f32 matmul, and on tiles the model does not price (by_waves),
    Tuning.splits as given."""
    import dataclasses

    from webgpu_llm.engine import waves

    cfg, eng, base = _on_emulated_f16_tiles(gpu, "tiny")
    monkeypatch.setattr(waves, "WAVE_AREA", 0)  # (the tiny model's tiles priced as large ones)
    assert eng.programs.mm_splits == {"qkv": 1, "o": 1, "gate_up": 1, "down": 1}
    want = _step_logits(eng)
    eng.rebuild(dataclasses.replace(base, sms=64))
    split = eng.programs.mm_splits
    assert split["o"] > 1 and split["down"] > 1, split
    labels = [d.label for d in eng.programs.prefill.dispatches]
    assert sum("f16_matmul_partial" in x for x in labels) == sum(n > 1 for n in split.values()) * cfg.n_layers
    assert max_rel(_step_logits(eng), want) < 1e-3
    eng.rebuild(dataclasses.replace(base, sms=64, mma="off", splits=(("down", 2),)))
    assert eng.programs.mm_splits == {"qkv": 1, "o": 1, "gate_up": 1, "down": 2}
    monkeypatch.setattr(waves, "WAVE_AREA", 128 * 128)
    eng.rebuild(dataclasses.replace(base, sms=64, tiles=(2, 2, 2, 2), float_tiles=(), role_tiles=(),
                                    splits=(("down", 2),)))
    assert eng.programs.mm_splits == {"qkv": 1, "o": 1, "gate_up": 1, "down": 2}


@pytest.mark.parametrize(("preset", "sms", "want"), [
    ("tiny", 5, {"gate_up tail": 5}), ("tiny", 6, {"qkv tail": 3}),
    ("tiny-gemma3", 12, {"qkv": 2, "o": 3, "down": 3, "gate_up tail": 3}),
    ("tiny-qwen3", 12, {"o": 3, "down": 3, "gate_up tail": 3})])
def test_split_tails_of_qkv_and_gate_up_on_f16_tiles(gpu, monkeypatch, preset, sms, want):
    """Tuning.sms where a matmul's last wave would be mostly idle: its whole waves' pairs in one
    dispatch, the rest split over K in another, then their epilogue (bias, RoPE and the KV
    append; SiLU·mul or GeGLU into f16s) on the tail's sums, beside whole splits (Gemma 3's
    output norms adding O's and down's partials; Qwen3's QKV never a tail: its norm kernel
    sums the partials); the prompt's logits as unsplit. The tiny models' short walks make
    such tails pay only with the epilogue's dispatch free, so the model is told it is (and
    prices their 64 x 64 tiles as it does larger ones)."""
    import dataclasses

    from webgpu_llm.engine import waves

    monkeypatch.setattr(waves, "DISPATCH_US", 0.0)
    monkeypatch.setattr(waves, "WAVE_AREA", 0)
    cfg, eng, base = _on_emulated_f16_tiles(gpu, preset, tiles=(2, 2, 2, 2), float_tiles=(), role_tiles=())
    unsplit = eng.logits(IDS[:13])
    eng.rebuild(dataclasses.replace(base, sms=sms))
    got = eng.programs.mm_splits
    assert {k: got.get(k, 1) for k in want} == want, got
    labels = [d.label for d in eng.programs.prefill.dispatches]
    # (a tail's epilogue, and QKV's split: its epilogue's or its per-head norms' kernel sums it)
    finishes = sum(k.endswith("tail") or (k == "qkv" and got[k] > 1) for k in got)
    assert sum(x.startswith("split_finish_") for x in labels) == finishes * cfg.n_layers, labels
    assert max_rel(eng.logits(IDS[:13]), unsplit) < 1e-3


def test_short_batches_take_splits_planned_for_them(gpu, monkeypatch):
    """A prompt batch longer than SHORT_PREFILL plans its K splits for its length, and a batch
    of up to SHORT_PREFILL tokens (a short prompt, a long one's last) takes a Program planned
    for that many (here gate/up's tail and down split for 32 tokens, QKV's tail for 16); the
    next token's logits and the scored ones as the unsplit prompt's, one batch or two."""
    import dataclasses

    from webgpu_llm.engine import programs, waves

    monkeypatch.setattr(waves, "DISPATCH_US", 0.0)
    monkeypatch.setattr(waves, "WAVE_AREA", 0)
    monkeypatch.setattr(programs, "SHORT_PREFILL", 16)
    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    from webgpu_llm.models.presets import preset_model

    cfg, tensors = preset_model("tiny", "f16")
    eng = Session.build(gpu, cfg, tensors.get, Settings(batch=32), ctx=64)
    base = dataclasses.replace(eng.programs.tuning, mma="emulate-f16", x_f16=True, thin_rows=0, splits=(),
                               tiles=(1, 2, 1, 2), float_tiles=(), role_tiles=())
    eng.rebuild(base)
    prompts = [IDS[:13], IDS, (IDS * 2)[:45]]
    want = [eng.next_logits(p) for p in prompts]
    scored = eng.logits(prompts[2])
    eng.rebuild(dataclasses.replace(base, sms=6))
    m = eng.programs
    assert (m.prompt_splits["gate_up"].tail_ways, m.prompt_splits["down"].ways) == (3, 2), m.prompt_splits
    assert m.short_splits is not None and m.short_splits["qkv"].tail_ways == 3, m.short_splits
    assert m.prefill_for(13) is m.tiled_for(16) is not m.prefill and m.prefill_for(17) is m.prefill
    for p, w in zip(prompts, want):
        assert max_rel(eng.next_logits(p), w) < 1e-3
    assert max_rel(eng.logits(prompts[2]), scored) < 1e-3


def test_gpu_decode_switches_match_transformers(gpu, tiny_dirs):
    """The float decode path a GPU's tuning takes (weights read by adjacent words, keys read
    the same way, first units requested before the prologue) with row groups of 8 threads:
    greedy tokens and logits as transformers'."""
    import dataclasses

    from webgpu_llm.engine.settings import ROLES

    d = tiny_dirs["qwen2", "float32"]
    llm = _load(d, gpu)
    t = llm.session.tuning
    llm.session.rebuild(dataclasses.replace(t, mv=tuple((r, 64, 8, 1) for r in ROLES), spread=True,
                                          attn_wg=64, early=2))
    assert list(llm.session.stream(IDS[:9], 0, SamplingParams(), 12)) == hf_greedy(d, IDS[:9], 12)
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < 1e-4


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_greedy_decode_matches_transformers_fused_and_unfused(gpu, tiny_dirs, arch):
    d = tiny_dirs[arch, "float32"]
    want = hf_greedy(d, IDS[:9], 12)
    for fused in (True, False):
        llm = _load(d, gpu, fused=fused)
        got = list(llm.session.stream(IDS[:9], 0, SamplingParams(), 12))
        assert got == want, fused


def test_split_bindings_give_the_same_logits(tiny_dirs):
    """A binding limit far below the embedding's size splits it (and the LM head) by rows,
    as Mesa's 128 MiB limit does for real vocabularies."""
    d = tiny_dirs["qwen2", "float32"]
    small = open_gpu("wgpu", max_binding=200 * 1024)
    llm = _load(d, small)
    assert len(llm.session.programs.weights.embedding.segments) >= 2
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < 1e-4
    assert list(llm.session.stream(IDS[:9], 0, SamplingParams(), 6)) == hf_greedy(d, IDS[:9], 6)


def test_chat_session_reuses_the_cache(wgpu_gpu, tiny_dirs):
    """A second turn prefills only the new tokens and answers as a fresh run on the whole
    conversation does."""
    d = tiny_dirs["llama", "float32"]
    llm = _load(d, wgpu_gpu, ctx=256)
    chat = llm.chat_session()
    first = "".join(chat.send("hello there", max_tokens=6, temperature=0.0))
    cached = len(chat.cached)
    second = "".join(chat.send("and again", max_tokens=6, temperature=0.0))
    assert cached > 0 and first is not None
    fresh = llm.generate_text(chat.messages[:-1], max_tokens=6)
    assert second == fresh


def test_prompt_longer_than_context(wgpu_gpu, tiny_dirs):
    llm = _load(tiny_dirs["llama", "float32"], wgpu_gpu, ctx=16)
    with pytest.raises(UserError, match="context"):
        llm.generate_text(IDS, max_tokens=2)
    assert len(llm.generate_text(IDS, max_tokens=2, truncate=True)) >= 0


def test_seeded_sampling_is_reproducible(wgpu_gpu, tiny_dirs):
    llm = _load(tiny_dirs["qwen2", "float32"], wgpu_gpu)
    kw = dict(max_tokens=10, temperature=0.9, top_k=20, top_p=0.9, min_p=0.0, seed=7, raw=True)
    a = list(llm.generate_ids(IDS[:5], 10, SamplingParams(0.9, 20, 0.9, 0.0, seed=7)))
    b = list(llm.generate_ids(IDS[:5], 10, SamplingParams(0.9, 20, 0.9, 0.0, seed=7)))
    c = list(llm.generate_ids(IDS[:5], 10, SamplingParams(0.9, 20, 0.9, 0.0, seed=8)))
    assert a == b and a != c
    assert llm.generate_text("abc", **kw) == llm.generate_text("abc", **kw)


@pytest.mark.slow
def test_int8_activations_stay_close_to_float(wgpu_gpu):
    """The dot4I8Packed decode path (every q8_0 mat-vec, incl. the fused RMSNorm and attention
    prologues) against the float path on the same weights: one decode step's logits."""
    import dataclasses

    from webgpu_llm.models.presets import preset_model

    cfg, tensors = preset_model("tiny", "q8_0")
    eng = Session.build(wgpu_gpu, cfg, tensors.get, Settings(batch=16), ctx=64)
    model = eng.programs

    eng.rebuild(dataclasses.replace(eng.tuning, int8=False))  # a GPU's default takes the int8 path
    base = _step_logits(eng)
    eng.rebuild(dataclasses.replace(eng.tuning, int8=True))
    got = _step_logits(eng)
    assert 0 < max_rel(got, base) < 3e-2
    # other shapes on the int8 path only (as the GPU default has for O and down): same math
    eng.rebuild(dataclasses.replace(eng.tuning, int8=True, mv_int8=(("o", 64, 4, 1), ("down", 128, 32, 1))))
    down = model.spec(model.weights.layers[0].down, epilogue="add")
    assert model.matvec_shape(down, "down") == ({"wg": 128, "tpr": 32, "ilp": 1}, True)
    assert max_rel(_step_logits(eng), got) < 1e-5
    # the first unit's words requested before x is quantized (int8_early), the shapes' units in
    # flight (int8_ilp: here 2): same math
    eng.rebuild(dataclasses.replace(eng.tuning, int8=True, int8_early=1, int8_ilp=True,
                                    mv_int8=(("o", 64, 4, 2), ("down", 128, 32, 1))))
    assert any("dotw_row(" in d.kernel.wgsl for d in model.decode.dispatches)
    assert max_rel(_step_logits(eng), got) < 1e-5


@pytest.mark.slow
def test_persistent_decode_layers_match_transformers(wgpu_gpu, tiny_dirs):
    """The decode layers as persistent dispatches (kernels/persistent.py; one workgroup on a
    CPU adapter), with the mat-vecs' early weight requests on, so that O, gate/up and down
    wait for their stage inside (attention before its call): transformers' greedy tokens, and
    the step logits of one dispatch per kernel."""
    import dataclasses

    d = tiny_dirs["qwen2", "float32"]
    llm = _load(d, wgpu_gpu)
    eng = llm.session
    m = eng.programs

    base = _step_logits(eng)
    eng.rebuild(dataclasses.replace(m.tuning, persist=1, early=1))
    assert m.persist_note == "" and len(m.decode) == 1 + m.cfg.n_layers  # embed, then a dispatch per layer
    assert max_rel(_step_logits(eng), base) < 1e-5
    assert list(eng.stream(IDS[:9], 0, SamplingParams(), 12)) == hf_greedy(d, IDS[:9], 12)


def test_int8_early_with_folded_prologues(gpu):
    """Tuning.int8_early where the int8 mat-vecs' prologues are Gemma 3's folded output norms
    (two reductions before x is quantized) and the attention folds the q/k norms: the step
    logits of the same int8 path without it, both backends."""
    import dataclasses

    from webgpu_llm.models.presets import preset_model

    cfg, tensors = preset_model("tiny-gemma3", "q8_0")
    eng = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=64)
    t = dataclasses.replace(eng.tuning, int8=True, int8_direct=True, fold_post_norm=True, fold_qk_norm=True,
                            attn_wg=64)
    eng.rebuild(t)
    base = _step_logits(eng)
    eng.rebuild(dataclasses.replace(t, int8_early=1))
    assert any("dotw_row(" in d.kernel.wgsl and "_post_" in d.kernel.name for d in eng.programs.decode.dispatches)
    assert max_rel(_step_logits(eng), base) < 1e-5


def test_persistent_decode_layers_with_int8_weights(wgpu_gpu):
    """Quantized weights on the int8 mat-vecs as persistent stages (the staged int8 x has a name
    of its own, not the fused QKV kernel's binding `q`): they build, and their step logits are
    those of one dispatch per kernel."""
    import dataclasses

    from webgpu_llm.models.presets import preset_model

    cfg, tensors = preset_model("tiny", "q8_0", n_layers=2)
    eng = Session.build(wgpu_gpu, cfg, tensors.get, Settings(batch=16), 64)
    m = eng.programs
    eng.rebuild(dataclasses.replace(m.tuning, int8=True, persist=0))
    base = _step_logits(eng)
    eng.rebuild(dataclasses.replace(m.tuning, int8=True, persist=1))
    assert m.persist_note == "" and len(m.decode) == 1 + cfg.n_layers
    assert "dot4I8Packed" in m.decode.dispatches[1].kernel.wgsl  # the int8 mat-vecs inside
    assert max_rel(_step_logits(eng), base) < 1e-5
    # ... with their first words requested before their stage's wait (int8_early)
    eng.rebuild(dataclasses.replace(m.tuning, int8=True, persist=1, int8_early=1))
    assert m.persist_note == "" and "dotw_row(" in m.decode.dispatches[1].kernel.wgsl
    assert max_rel(_step_logits(eng), base) < 1e-5


@pytest.mark.slow
def test_prompt_matmuls_on_int8_tiles_stay_close_to_float(wgpu_gpu):
    """The prompt matmuls of a q8_0 model through kernels/mma.py (its dot4I8Packed tiles here;
    the matrix units too where the device has them) against the SIMT matmul: the prompt's KV
    cache feeds the next step's logits."""
    import dataclasses

    from webgpu_llm.kernels.mma import usable
    from webgpu_llm.models.presets import preset_model

    cfg, tensors = preset_model("tiny", "q8_0")
    eng = Session.build(wgpu_gpu, cfg, tensors.get, Settings(batch=16), ctx=64)
    model = eng.programs

    def scored() -> np.ndarray:
        """The scoring path's logits of IDS[:9] (prompt, final norm, one chunk's LM head)."""
        assert len(model.score_chunks) == 1
        return eng.logits(IDS[:9]).reshape(-1)

    eng.rebuild(dataclasses.replace(model.tuning, mma="off"))
    base, base_scored = _step_logits(eng), scored()
    eng.rebuild(dataclasses.replace(model.tuning, mma="emulate", quant_f16=False))  # (a GPU's tuning: f16 tiles first)
    assert any(d.label.startswith("mma_matmul") for d in model.prefill.dispatches)
    # the LM head's int8 units are made once, by the final norm's program, for every chunk
    assert [d.label.startswith("quantize") for d in model.score_norm.dispatches] == [False, True]
    assert not any(d.label.startswith("quantize") for c in model.score_chunks for d in c.dispatches)
    got, got_scored = _step_logits(eng), scored()
    assert 0 < max_rel(got, base) < 3e-2
    assert 0 < max_rel(got_scored, base_scored) < 3e-2
    if usable(wgpu_gpu):
        eng.rebuild(dataclasses.replace(model.tuning, mma="auto"))
        assert max_rel(_step_logits(eng), got) < 1e-5
        assert max_rel(scored(), got_scored) < 1e-5
    with pytest.raises(ValueError, match=r"Tuning\.mma"):
        eng.rebuild(dataclasses.replace(model.tuning, mma="yes"))


def tile_paths(model) -> set[str]:
    """The prompt matmuls' paths, without what rows of x they read ("f16, x f16" is "f16")."""
    return {p.split(",")[0] for p in model.mm_paths.values()}


@pytest.mark.parametrize("dtype,mode", [("f16", "emulate"), ("bf16", "emulate"), ("q4_0", "emulate-f16")])
def test_prompt_matmuls_on_f16_tiles_stay_close_to_float(gpu, dtype, mode):
    """The prompt matmuls of float models on the f16 tiles (kernels/mma.py; emulated here, the
    matrix units too where the device has them), and of a quantized one dequantized into them
    (mma="f16"), against the f32 matmul: the prompt's KV cache feeds the next step's logits,
    and a greedy continuation is the same."""
    import dataclasses

    from webgpu_llm.engine import SamplingParams
    from webgpu_llm.models.presets import preset_model

    def greedy() -> list[int]:
        return list(eng.stream(IDS[:9], 0, SamplingParams(), 6))

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    cfg, tensors = preset_model("tiny", dtype)
    eng = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=64)
    model = eng.programs
    eng.rebuild(dataclasses.replace(model.tuning, mma="off"))
    base, base_tokens = _step_logits(eng), greedy()
    eng.rebuild(dataclasses.replace(model.tuning, mma=mode))
    assert tile_paths(model) == {"f16"}, model.mm_paths
    assert all(d.label.startswith("f16_matmul") for d in model.prefill.dispatches if "matmul" in d.label)
    got = _step_logits(eng)
    assert 0 < max_rel(got, base) < 1e-2
    assert greedy() == base_tokens
    # double-buffered staging, 2 units a step: the same sums; both together take more workgroup
    # memory than llvmpipe's 32 KiB, and the matmuls fall back to one buffer and one unit
    for kw, tag in (({"double_staging": True}, "_double"), ({"stage_units": 2}, "_k2"),
                    ({"double_staging": True, "stage_units": 2}, "_double_k2")):
        t = dataclasses.replace(model.tuning, mma=mode, float_tiles=(), role_tiles=(), x_f16=False, **kw)  # (a GPU's: other shapes)
        eng.rebuild(t)
        labels = [d.label.removesuffix("_emulated") for d in model.prefill.dispatches if d.label.startswith("f16_matmul")]
        fits = t.tile_shape().shared_bytes <= gpu.limits["max-compute-workgroup-storage-size"]
        # (a GPU's tuning tags its loads after these: _straight, _d2)
        labels = [x.removesuffix("_d2").removesuffix("_straight") for x in labels]
        assert labels and all(x.endswith(tag if fits else "_2x2x2x2") for x in labels), (kw, labels)
        assert max_rel(_step_logits(eng), got) < 1e-5


@pytest.mark.parametrize("preset,dtype", [("tiny", "f16"), ("tiny-qwen3", "q4_0"), ("tiny-gemma3", "q4_0"),
                                          ("tiny-moe", "q4_0")])
def test_prompt_rows_of_f16_for_the_tiles(gpu, preset, dtype):
    """Tuning.x_f16: the prompt's norms write xn as f16s for QKV and gate/up, gate/up writes its
    outputs as f16s for down, the attention on its tiles its rows for O (the rounding the tiles'
    staging did to the f32 rows): the same logits; the reading matmuls' kernels say so; off
    where one reader is not on the f16 tiles. Gemma 3: the output norm after O writes the FFN's
    xn; a mixture: the norm before the FFN writes xn as f32s (its router reads them) and as f16s
    for the experts' gate/up, which writes its outputs as f16s for the expert down."""
    import dataclasses

    from webgpu_llm.models.presets import preset_model

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    cfg, tensors = preset_model(preset, dtype)
    eng = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=64)
    model = eng.programs
    tiles = {"mma": "emulate-f16", "attn_tiles": preset == "tiny"}  # (the prompt attention on its tiles, or not)
    eng.rebuild(dataclasses.replace(model.tuning, **tiles, x_f16=False))  # (a GPU's default: on)
    want = _step_logits(eng)
    eng.rebuild(dataclasses.replace(model.tuning, **tiles, x_f16=True))
    labels = [d.label for d in model.prefill.dispatches]
    moe = preset == "tiny-moe"
    assert sum(x.startswith(("rmsnorm_f16", "post_norm_next_f16")) for x in labels) == (1 if moe else 2) * cfg.n_layers
    assert sum(x.startswith("rmsnorm_and_f16") for x in labels) == (cfg.n_layers if moe else 0)
    # QKV, gate/up, down (of a mixture's experts); O too where the attention runs on its tiles
    o = model.attention_tiles(model.attention_spec(0)) is not None
    assert o == (preset == "tiny")
    assert sum(x.startswith("attention_prompt_tiles_f16out") for x in labels) == (cfg.n_layers if o else 0)
    assert sum(x.startswith("f16_matmul") and "_xh" in x for x in labels) == (3 + o) * cfg.n_layers
    want_paths = {"qkv": "f16, x f16", "o": "f16, x f16" if o else "f16", "gate_up": "f16, x f16", "down": "f16, x f16"}
    assert {r: model.mm_paths[r] for r in want_paths} == want_paths
    assert max_rel(_step_logits(eng), want) < 1e-5
    if moe:  # the experts' own tiles of 32 tokens (a GPU's default, EXPERT_TILES, takes 64)
        eng.rebuild(dataclasses.replace(model.tuning, **tiles, x_f16=True, expert_tiles=(1, 4, 2, 2)))
        assert sum("_1x4x2x2" in d.label and "_xh" in d.label for d in model.prefill.dispatches) == 2 * cfg.n_layers
        assert max_rel(_step_logits(eng), want) < 1e-5
    eng.rebuild(dataclasses.replace(model.tuning, mma="off", x_f16=True))  # no tiles: no f16 rows
    assert not any("rmsnorm_f16" in d.label for d in model.prefill.dispatches)


@pytest.mark.parametrize("dtype,shape", [("f16", "4x2x2x4"), ("q4_0", "2x2x2x2")])
def test_float_weights_take_their_own_tiles(gpu, dtype, shape):
    """Tuning.float_tiles: the prompt matmuls of float weights take that workgroup shape of the
    f16 tiles, quantized ones (dequantized into them while staging) Tuning.tiles; the logits
    of the float model equal those on Tuning.tiles, also with its rows staged by two threads."""
    import dataclasses

    from webgpu_llm.models.presets import preset_model

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    cfg, tensors = preset_model("tiny", dtype)
    eng = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=64)
    model = eng.programs
    # (thin_rows=0: the test prompt on the prompt tiles, not the short prompts' batch tiles a GPU
    # takes; sms=0: no K splits by the waves model, whose splits would follow each shape)
    base = dataclasses.replace(model.tuning, mma="emulate-f16", tiles=(2, 2, 2, 2), float_tiles=(), role_tiles=(),
                               thin_rows=0, sms=0)
    eng.rebuild(base)
    want = _step_logits(eng)
    eng.rebuild(dataclasses.replace(base, float_tiles=(4, 2, 2, 4)))
    labels = [d.label for d in model.prefill.dispatches if d.label.startswith("f16_matmul")]
    assert labels and all(f"_{shape}" in x for x in labels), labels
    assert max_rel(_step_logits(eng), want) < 1e-5
    # Tuning.float_double: the float weights' tiles double-buffered, the quantized ones' not
    # (2x2x2x2: 4x2x2x4's 48 KiB double-buffered are past llvmpipe's 32, and would run single)
    eng.rebuild(dataclasses.replace(base, float_tiles=(2, 2, 2, 2), float_double=True))
    labels = [d.label for d in model.prefill.dispatches if d.label.startswith("f16_matmul")]
    assert all(("_double" in x) == (dtype == "f16") for x in labels), labels
    assert max_rel(_step_logits(eng), want) < 1e-5
    # Tuning.spread_staging: f16 weight rows staged by two threads each (4x2x2x4 and 2x2x2x2
    # have twice the threads of their weight rows); quantized rows keep one thread
    eng.rebuild(dataclasses.replace(base, float_tiles=(4, 2, 2, 4), spread_staging=True))
    labels = [d.label for d in model.prefill.dispatches if d.label.startswith("f16_matmul")]
    assert all(("_w2" in x) == (dtype == "f16") for x in labels), labels
    assert max_rel(_step_logits(eng), want) < 1e-5
    # Tuning.role_tiles: one role's matmuls in a shape of their own, before both
    eng.rebuild(dataclasses.replace(base, float_tiles=(4, 2, 2, 4), role_tiles=(("qkv", (1, 4, 1, 2)),)))
    assert model.prefill.dispatches and sum("_1x4x1x2" in d.label for d in model.prefill.dispatches) == cfg.n_layers
    assert max_rel(_step_logits(eng), want) < 1e-5
    # a role's shape past the device's workgroup memory (gate/up's 4x2x4x4 takes 38 KiB, past
    # llvmpipe's 32) runs with fewer token tiles a subgroup
    eng.rebuild(dataclasses.replace(base, role_tiles=(("gate_up", (4, 2, 4, 4)),)))
    from webgpu_llm.kernels.mma import TileShape

    fits = TileShape(4, 2, 4, 4).shared_bytes <= gpu.limits["max-compute-workgroup-storage-size"]
    labels = [d.label for d in model.prefill.dispatches if d.label.startswith("f16_matmul_silu_mul")]
    assert len(labels) == cfg.n_layers and all(("_4x2x4x4" if fits else "_4x2x2x4") in x for x in labels), labels
    # ... and says so (bench's JSON: prompt_tiles)
    assert model.mm_tiles["gate_up"].split()[0] == ("4x2x4x4" if fits else "4x2x2x4")
    assert model.mm_tiles["qkv"].split()[0] == "2x2x2x2"
    assert max_rel(_step_logits(eng), want) < 1e-5
    for bad in ((("head", (2, 2, 2, 2)),), (("qkv", (2, 2)),), (("qkv", (1, 1, 8, 8)),)):
        with pytest.raises(ValueError, match="role_tiles"):
            dataclasses.replace(base, role_tiles=bad).check()
    # Tuning.acc_f16: those roles' sums as f16s, close to the f32 sums' logits, not equal
    eng.rebuild(dataclasses.replace(base, acc_f16=("gate_up", "down")))
    # (emulated tiles: "_a16_emulated"; a GPU's real ones "_a16", where it lists f16 sums)
    from webgpu_llm.kernels.mma import has_f16_mma

    sums16 = not model.f16_tiles_usable or has_f16_mma(gpu.subgroup_matrix_configs, sums="f16")
    assert sum("_a16" in d.label for d in model.prefill.dispatches) == (2 * cfg.n_layers if sums16 else 0)
    assert (0 < max_rel(_step_logits(eng), want) < 1e-2) if sums16 else max_rel(_step_logits(eng), want) < 1e-5
    with pytest.raises(ValueError, match="acc_f16"):
        dataclasses.replace(base, acc_f16=("head",)).check()
    # Tuning.float_role_tiles and float_acc_f16: float weights' own role shapes and f16 sums
    # (a wide model's gate/up), before role_tiles; quantized weights keep theirs
    eng.rebuild(dataclasses.replace(base, role_tiles=(("gate_up", (1, 4, 1, 2)),),
                                    float_role_tiles=(("gate_up", (2, 2, 1, 2)),), float_acc_f16=("gate_up",)))
    labels = [d.label for d in model.prefill.dispatches if d.label.startswith("f16_matmul_silu_mul")]
    floats = dtype == "f16"
    assert len(labels) == cfg.n_layers and all(("_2x2x1x2" if floats else "_1x4x1x2") in x for x in labels), labels
    assert all(("_a16" in x) == (floats and sums16) for x in labels), labels
    assert max_rel(_step_logits(eng), want) < (1e-2 if floats and sums16 else 1e-5)
    # the wide models' 4x2x4x8 past the device's workgroup memory (45 KiB, past llvmpipe's 32):
    # 4x2x4x4, then fewer token tiles
    wide = dataclasses.replace(base, float_role_tiles=(("gate_up", (4, 2, 4, 8)),), float_acc_f16=("gate_up",))
    eng.rebuild(wide)
    fits = wide.tile_shape(float_weights=True, role="gate_up").shared_bytes <= gpu.limits["max-compute-workgroup-storage-size"]
    if floats:
        assert model.mm_tiles["gate_up"].split()[0] == ("4x2x4x8" if fits else "4x2x2x4")
        assert max_rel(_step_logits(eng), want) < (1e-2 if sums16 else 1e-5)
    with pytest.raises(ValueError, match="float_acc_f16"):
        dataclasses.replace(base, float_acc_f16=("head",)).check()
    with pytest.raises(ValueError, match="float_role_tiles"):
        dataclasses.replace(base, float_role_tiles=(("qkv", (2, 2)),)).check()


def test_quant_f16_puts_quantized_prompts_on_f16_tiles_first(gpu):
    """Tuning.quant_f16 (a GPU's default): "auto" takes the f16 tiles for quantized weights
    where they run, before the int8 tiles, the same kernels as mma="f16" asks for; without it
    the int8 tiles."""
    import dataclasses

    from webgpu_llm.models.presets import preset_model

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    cfg, tensors = preset_model("tiny", "q4_0")
    eng = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=64)
    model = eng.programs
    eng.rebuild(dataclasses.replace(model.tuning, mma="emulate", quant_f16=False))
    assert set(model.mm_paths.values()) == {"int8"}, model.mm_paths
    eng.rebuild(dataclasses.replace(model.tuning, mma="emulate-f16"))
    want = _step_logits(eng)
    eng.rebuild(dataclasses.replace(model.tuning, mma="emulate", quant_f16=True))
    assert tile_paths(model) == {"f16"}, model.mm_paths
    assert max_rel(_step_logits(eng), want) < 1e-6
    eng.rebuild(dataclasses.replace(model.tuning, mma="int8", quant_f16=True))  # asked for: int8 still
    assert set(model.mm_paths.values()) <= {"int8", "simt"}, model.mm_paths


def test_default_tuning_by_model_shape():
    """The measured defaults of GPUs (an H100 here): models 1024 wide and wider take the 2x2x4x4 f16 tiles,
    narrower ones 2x2x2x2, and quantized prompts go on them; heads of 64 and more take the
    prompt attention on the tiles; heads of 128 their split-K decode attention 64 keys a split in 256 threads, heads of 256 32 keys; the
    decode folds its norms. A CPU adapter keeps one thread a key and no folds."""
    from types import SimpleNamespace

    from webgpu_llm.engine.settings import FLOAT_TILES, ROLE_TILES, WIDE_TILES, default_tuning

    gpu = SimpleNamespace(is_cpu=False, backend="dawn", info={"device": "NVIDIA H100 80GB HBM3"})
    wide, narrow, gemma = default_tuning(gpu, 1536, 128), default_tuning(gpu, 896, 64), default_tuning(gpu, 1152, 256)
    assert wide.tiles == WIDE_TILES and wide.quant_f16 and wide.attn_tiles
    assert narrow.tiles == (2, 2, 2, 2) and narrow.quant_f16 and narrow.attn_tiles
    # float weights take their own tiles at every width, and the prompt rows go as f16s
    assert wide.float_tiles == narrow.float_tiles == FLOAT_TILES and wide.x_f16 and narrow.x_f16
    # ... and gate/up its own, larger ones
    assert wide.role_tiles == narrow.role_tiles == ROLE_TILES and dict(ROLE_TILES)["gate_up"] == (4, 2, 4, 4)
    # ... and a wide model's float weights 4x2x4x8 with f16 sums
    assert dict(wide.float_role_tiles)["gate_up"] == (4, 2, 4, 8) and wide.float_acc_f16 == ("gate_up",)
    assert not narrow.float_role_tiles and not gemma.float_role_tiles and not narrow.float_acc_f16
    assert wide.tile_shape(float_weights=True, role="gate_up").acc16
    assert not wide.tile_shape(float_weights=False, role="gate_up").acc16
    # row groups narrower than a subgroup sum by shuffles on GPUs
    assert wide.mv_shuffle and narrow.mv_shuffle
    assert not default_tuning(gpu, 896, 32).attn_tiles
    assert (narrow.attn_chunk, narrow.attn_wg, wide.attn_chunk, wide.attn_wg) == (32, 128, 64, 256)
    assert (gemma.attn_chunk, gemma.attn_wg) == (32, 256) and gemma.fold_qk_norm and gemma.fold_post_norm
    # the wide prompt tiles from 1024 wide; Gemma 3's 1152 take them but keep the narrow mat-vecs
    assert default_tuning(gpu, 1024, 128).tiles == WIDE_TILES
    assert gemma.tiles == WIDE_TILES and gemma.quant_f16 and gemma.mv == narrow.mv != wide.mv
    # the split-K merge unrolled on GPUs
    assert narrow.combine_unroll == 4
    # the prompt matmuls split by the waves of the adapters whose multiprocessors are known
    assert wide.sms == 132 and wide.expert_list
    for name in ("NVIDIA H100 PCIe", "NVIDIA GeForce RTX 4090"):
        assert default_tuning(SimpleNamespace(is_cpu=False, backend="dawn", info={"device": name}), 1536, 128).sms == 0
    cpu = default_tuning(SimpleNamespace(is_cpu=True, backend="dawn", info={}), 1536, 128)
    assert not cpu.quant_f16 and not cpu.attn_tiles and not cpu.fold_qk_norm and cpu.attn_wg == 0 and not cpu.role_tiles
    assert cpu.combine_unroll == 1


def test_prompt_batch_fits_the_context_and_one_binding():
    """GPU_BATCH's 2048 tokens where the context and the widest activation buffer (the tiny
    model's 512 FFN values a token) allow; fewer, a multiple of 64, where one binding holds
    fewer tokens' rows."""
    from webgpu_llm.engine.programs import fit_batch, token_floats
    from webgpu_llm.models.presets import preset_model

    cfg, _ = preset_model("tiny", "f32")
    assert token_floats(cfg) == max(cfg.intermediate, cfg.q_dim + 2 * cfg.kv_dim)
    row = 4 * token_floats(cfg)
    assert fit_batch(2048, 4096, 2048 * row, cfg) == 2048
    assert fit_batch(2048, 1000, 2048 * row, cfg) == 1000
    assert fit_batch(2048, 4096, 700 * row, cfg) == 640
    assert fit_batch(128, 4096, 20 * row, cfg) == 64 and fit_batch(32, 4096, 20 * row, cfg) == 32  # (never below 64)


def test_f16_decode_arithmetic_stays_close_to_float(gpu):
    """Tuning.f16_decode: an f16 model's decode mat-vecs multiply in f16 (after the device's
    own check), with one lane a row pair and with GPU-like row groups reading adjacent words
    and early units, and as persistent layers' stages: the step's logits within f16 rounding
    of the f32 arithmetic's, the same greedy tokens."""
    import dataclasses

    from webgpu_llm.engine import SamplingParams
    from webgpu_llm.engine.settings import ROLES
    from webgpu_llm.kernels.linear import half_ok
    from webgpu_llm.models.presets import preset_model

    if not half_ok(gpu):
        pytest.skip("f16 arithmetic needs shader-f16 on Dawn")
    cfg, tensors = preset_model("tiny", "f16")
    eng = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=64)
    t = eng.programs.tuning
    for tuning in (t, dataclasses.replace(t, mv=tuple((r, 64, 8, 1) for r in ROLES), spread=True, early=1)):
        eng.rebuild(tuning)
        base, tokens = _step_logits(eng), list(eng.stream(IDS[:9], 0, SamplingParams(), 6))
        eng.rebuild(dataclasses.replace(tuning, f16_decode=True))
        assert gpu.checks["f16_matvec"]
        assert set(eng.programs.mv_paths.values()) == {"f16"}
        halves = [d.label for d in eng.programs.decode.dispatches if d.label.startswith("matvec")]
        assert halves and all(label.endswith("_h") for label in halves), halves
        assert 0 < max_rel(_step_logits(eng), base) < 1e-2
        assert list(eng.stream(IDS[:9], 0, SamplingParams(), 6)) == tokens
    # as the stages of persistent decode layers (their kernels' enables gathered at the top)
    eng.rebuild(dataclasses.replace(t, f16_decode=True, persist=1))
    assert eng.programs.persist_note == "" and "vec4<f16>" in eng.programs.decode.dispatches[1].kernel.wgsl
    eng.rebuild(t)
    base = _step_logits(eng)
    eng.rebuild(dataclasses.replace(t, f16_decode=True, persist=1))
    assert 0 < max_rel(_step_logits(eng), base) < 1e-2


@pytest.mark.slow
def test_prompt_attention_on_f16_tiles_stays_close_to_float(wgpu_gpu):
    """An f16 model's prompt attention on the f16 tiles (emulated here), one sequence (also
    with each block's keys split over workgroups) and a batched step (paged cache): the next
    step's logits within f16 rounding of the f32 kernel's, and the same greedy tokens beside
    another request."""
    gpu = wgpu_gpu
    import dataclasses

    from webgpu_llm.engine import SamplingParams
    from webgpu_llm.engine.batch import scheduler
    from webgpu_llm.models.presets import preset_model

    if not gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    cfg, tensors = preset_model("tiny", "f16")
    eng = Session.build(gpu, cfg, tensors.get, Settings(batch=16), ctx=96)
    model = eng.programs
    prompts = [IDS[:9], [*IDS, *IDS][:37]]

    eng.rebuild(dataclasses.replace(model.tuning, mma="off"))
    base, base_tokens = _step_logits(eng), [list(eng.stream(p, 0, SamplingParams(), 5)) for p in prompts]
    eng.rebuild(dataclasses.replace(model.tuning, mma="emulate", attn_tiles=True))
    assert any(d.label.startswith("attention_prompt_tiles") for d in model.prefill.dispatches)
    assert 0 < max_rel(_step_logits(eng), base) < 1e-2
    tiled = eng.logits(prompts[1])
    # the keys of each block in three parts (the last block's 37 keys: two of them), merged by
    # the combine kernel: the same logits but for P's f16 rounding against each part's maximum
    eng.rebuild(dataclasses.replace(model.tuning, mma="emulate", attn_tiles=True, attn_splits=3))
    labels = [d.label for d in model.prefill.dispatches]
    assert labels.count("attention_prompt_tiles_combine") == cfg.n_layers
    assert max_rel(eng.logits(prompts[1]), tiled) < 2e-3
    assert [list(eng.stream(p, 0, SamplingParams(), 5)) for p in prompts] == base_tokens
    eng.rebuild(dataclasses.replace(model.tuning, mma="emulate", attn_tiles=True))
    s = scheduler(eng, parallel=2, max_rows=12)
    try:
        assert any(d.label.startswith("attention_prompt_tiles") for d in s.programs.step(12, 1, False, False).dispatches)
        assert [c.wait() for c in [s.submit(p, SamplingParams(), 5) for p in prompts]] == base_tokens
    finally:
        s.close()


def test_prompt_in_throttled_batches_matches_transformers(wgpu_gpu, tiny_dirs):
    """A prompt of more batches than are queued at once (MAX_PREFILL_INFLIGHT): the later
    batches wait for the earlier ones' fences, and the answer is transformers' all the same."""
    from webgpu_llm.engine.session import MAX_PREFILL_INFLIGHT

    d = tiny_dirs["qwen2", "float32"]
    llm = _load(d, wgpu_gpu, batch=4)
    prompt = (IDS * 2)[:4 * MAX_PREFILL_INFLIGHT + 7]  # 4 batches of 4 and a ragged one
    assert list(llm.session.stream(prompt, 0, SamplingParams(), 6)) == hf_greedy(d, prompt, 6)


def test_a_stopped_stream_leaves_the_next_one_right(wgpu_gpu, tiny_dirs):
    """A stream closed after its first token (as Ctrl-C does) returns without waiting for the
    steps it queued; the next stream collects their read-backs first and answers as a fresh
    run does."""
    d = tiny_dirs["llama", "float32"]
    llm = _load(d, wgpu_gpu)
    eng = llm.session
    want = list(eng.stream(IDS[:9], 0, SamplingParams(), 12))
    gen = eng.stream(IDS[:5], 0, SamplingParams(), 40)
    next(gen)
    next(gen)
    gen.close()
    assert eng._orphans  # the steps in flight were not waited for
    assert list(eng.stream(IDS[:9], 0, SamplingParams(), 12)) == want
    assert not eng._orphans


def test_warm_up_runs_every_kernel_once_and_changes_nothing(wgpu_gpu, tiny_dirs):
    d = tiny_dirs["qwen2", "float32"]
    llm = _load(d, wgpu_gpu, warm_up=False)
    eng = llm.session
    before = llm.logits(IDS)
    seen: list[tuple[int, int]] = []
    wgpu_gpu.ran.clear()  # (the device is shared: other tests' warm-ups ran these pipelines)
    eng.warm_up(lambda done, total: seen.append((done, total)))
    m = eng.programs
    kernels = {id(x.pipeline) for p in (m.embed, m.prefill, m.prefill_for(1), m.head, *m.samplers.values(), m.decode,
                                        m.score_norm, m.score_chunks[0]) for x in p.dispatches}
    assert seen[-1] == (len(kernels), len(kernels)) and len(seen) == len(kernels)
    assert kernels <= wgpu_gpu.ran
    eng.warm_up(lambda done, total: seen.append((done, total)))  # each pipeline runs once on a device
    assert len(seen) == len(kernels)
    assert np.array_equal(llm.logits(IDS), before)
    assert list(eng.stream(IDS[:9], 0, SamplingParams(), 6)) == hf_greedy(d, IDS[:9], 6)


def test_generate_batch_and_async_calls_answer_as_one_at_a_time(wgpu_gpu, tiny_dirs):
    """The Python API's concurrent paths (continuous batching underneath): each answer is
    the one `generate_text` gives alone; stop strings cut them the same way."""
    import asyncio

    llm = _load(tiny_dirs["llama", "float32"], wgpu_gpu, ctx=128)
    prompts = ["hello there", "the sky is", "one two three four five", "x"]
    alone = [llm.generate_text(p, max_tokens=7) for p in prompts]
    assert llm.generate_batch(prompts, max_tokens=7, parallel=3) == alone
    stop = alone[1][2:4]
    assert llm.generate_batch(prompts[1:2], max_tokens=7, stop=[stop])[0] == alone[1][:alone[1].find(stop)]

    async def both() -> list[str]:
        async def one(p: str) -> str:
            return "".join([piece async for piece in llm.agenerate(p, max_tokens=7, parallel=3)])
        return await asyncio.gather(*(one(p) for p in prompts))

    assert asyncio.run(both()) == alone
    # a shared KV cache of 64 positions for 3 sequences: kept while asked for again
    sched = llm.scheduler(3, kv_tokens=64)
    assert sched.kv_tokens == (0, 64) and llm.scheduler(3, kv_tokens=64) is sched
    llm.close()
