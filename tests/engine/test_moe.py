"""Mixture-of-experts models (Qwen3-MoE, Mixtral, gpt-oss) against transformers on the CPU: tiny random
models (tests/reference_models.py) in safetensors and GGUF, through the prompt path (the
(token, slot) pairs grouped by expert) and decode (the chosen experts' rows only)."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from reference_models import (
    MOE_BUILDERS,
    batched_greedy,
    hf_greedy,
    hf_logits,
    make_tiny_gguf,
    max_rel,
    tiny_model_dirs,
    unfold_decode,
)
from webgpu_llm.api import LLM
from webgpu_llm.engine import SamplingParams

ARCHS = list(MOE_BUILDERS)
IDS = [5, 17, 300, 999, 42, 7, 7, 7, 128, 64, 1000, 3, 250, 251, 252, 9, 11, 600, 2, 77, 18, 19, 401]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return tiny_model_dirs(tmp_path_factory, MOE_BUILDERS, seed=3)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(wgpu_gpu, tiny_dirs, arch):
    """23 tokens in prompt batches of 16: every expert's matmul over the pairs routed to it.
    (The models on one backend: their kernels' tests run on both, and a model's distinct
    kernels cost CI a compile each.)"""
    d = tiny_dirs[arch, "float32"]
    llm = LLM.load(d, gpu=wgpu_gpu, batch=16, progress=False)
    assert llm.session.cfg.architecture.moe is not None
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_f16_logits_match_transformers(wgpu_gpu, tiny_dirs, arch):
    """The f16 checkpoint (one backend: the kernels' tests cover both)."""
    d = tiny_dirs[arch, "float16"]
    llm = LLM.load(d, gpu=wgpu_gpu, batch=16, progress=False)
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < 1e-2


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("ftype,tol", [(None, 1e-4), ("f16", 1e-2)])
def test_gguf_logits_match_transformers(wgpu_gpu, tiny_dirs, tmp_path, arch, ftype, tol):
    """As llama.cpp's converter writes them: each kind of expert matrix one 3-D tensor, the
    router in f32, Mixtral as a GGUF "llama" with expert counts."""
    d = tiny_dirs[arch, "float32"]
    llm = LLM.load(make_tiny_gguf(tmp_path / "m.gguf", d, ftype), gpu=wgpu_gpu, progress=False)
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < tol


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_decode_matches_transformers(gpu, tiny_dirs, arch):
    """12 tokens after a 9-token prompt (past gpt-oss's windows), fused decode, both backends."""
    d = tiny_dirs[arch, "float32"]
    llm = LLM.load(d, gpu=gpu, progress=False)
    assert list(llm.session.stream(IDS[:9], 0, SamplingParams(), 12)) == hf_greedy(d, IDS[:9], 12)


@pytest.mark.parametrize("arch", ARCHS)
def test_decode_folds_match_transformers(wgpu_gpu, tiny_dirs, arch):
    """Tuning.fold_route (each expert gate/up workgroup chooses the experts itself, the first
    writes the table for down and combine), fold_combine (down adds its rows' weighted experts,
    biases included, into h) and, where the model has q/k norms, fold_qk_norm: a dispatch less
    a layer each, the same step logits, transformers' greedy tokens; then the expert mat-vecs
    in row groups of 4 lanes (expert_tpr) with 3 units in flight (expert_ilp)."""
    import dataclasses

    d = tiny_dirs[arch, "float32"]
    s = LLM.load(d, gpu=wgpu_gpu, progress=False).session
    unfold_decode(s)  # (a GPU's tuning: the counts start from a q/k-norm kernel a layer)
    base, n = s.next_logits(IDS[:9]), len(s.programs.decode)
    qk = s.cfg.architecture.qk_norm
    s.rebuild(dataclasses.replace(s.tuning, fold_route=True, fold_combine=True, fold_qk_norm=qk))
    assert len(s.programs.decode) == n - s.cfg.n_layers * (3 if qk else 2)
    assert max_rel(s.next_logits(IDS[:9]), base) < 1e-5
    # the expert mat-vecs in row groups of their own width (Tuning.expert_tpr), 3 units in flight
    s.rebuild(dataclasses.replace(s.tuning, expert_tpr=4, expert_ilp=3))
    assert max_rel(s.next_logits(IDS[:9]), base) < 1e-5
    # ... and the router's mat-vec in a shape of its own (Tuning.router_mv): one workgroup a row
    # pair, not O's shape and blocks
    t = dataclasses.replace(s.tuning, router_mv=(16, 16, 2), blocks=(("o", 2),))
    s.rebuild(t)
    routers = [x for x in s.programs.decode.dispatches if any(".router" in getattr(b, "label", "") for b in x.buffers)]
    assert len(routers) == s.cfg.n_layers
    assert routers[0].size(1)[0] * routers[0].size(1)[1] == (s.cfg.architecture.moe.count + 1) // 2
    assert max_rel(s.next_logits(IDS[:9]), base) < 1e-5
    with pytest.raises(ValueError, match="router_mv"):
        dataclasses.replace(t, router_mv=(32, 16)).check()
    assert list(s.stream(IDS[:9], 0, SamplingParams(), 12)) == hf_greedy(d, IDS[:9], 12)


def _h200(gpu):
    """A stand-in for an H200 on `gpu`'s backend: what default_tuning reads of an adapter."""
    from types import SimpleNamespace

    return SimpleNamespace(is_cpu=False, backend=gpu.backend, info={"device": "NVIDIA H200"})


@pytest.mark.parametrize("arch", ARCHS)
def test_gpu_default_tuning_matches_transformers(wgpu_gpu, tiny_dirs, arch):
    """A GPU's whole default tuning for a mixture (default_tuning of an H200 with experts: the
    choice of experts by subgroup operations, the prompt router split over K, O's merge serving
    two row blocks, its prompt tiles emulated): transformers' greedy tokens and step logits, alone
    and in batched steps."""
    import dataclasses

    from webgpu_llm.engine.settings import default_tuning

    d = tiny_dirs[arch, "float32"]
    s = LLM.load(d, gpu=wgpu_gpu, progress=False).session
    c = s.cfg
    h200 = _h200(wgpu_gpu)
    t = default_tuning(h200, c.hidden, c.head_dim, experts=True)
    assert t.route_subgroups and t.router_splits > 1 and t.row_blocks("o") == 2 and t.int8_ilp
    assert default_tuning(h200, c.hidden, c.head_dim).row_blocks("o") == 1  # (dense models keep one)
    s.rebuild(dataclasses.replace(t, mma="emulate"))
    assert list(s.stream(IDS[:9], 0, SamplingParams(), 12)) == hf_greedy(d, IDS[:9], 12)
    assert max_rel(s.logits(IDS[:9]), hf_logits(d, IDS[:9])) < 1e-4
    got, want = batched_greedy(s, d, [IDS[:9], IDS[3:20]])  # (a batched step's router and choice too)
    assert got == want


@pytest.mark.parametrize("arch", ARCHS)
def test_expert_tiles_staging_on_odd_sizes(wgpu_gpu, tiny_dirs, arch):
    """The experts' f16 tiles (emulated) with two steps' loads in flight and two units a step
    (Tuning.expert_depth, expert_units) on the f16 models' odd sizes (K not a multiple of 32 or
    of 64): the logits of one unit a step and, within f16, transformers'; so too with the experts'
    gate/up summed in f16s."""
    import dataclasses

    d = tiny_dirs[arch, "float16"]
    s = LLM.load(d, gpu=wgpu_gpu, batch=16, progress=False).session
    s.rebuild(dataclasses.replace(s.tuning, mma="emulate", expert_tiles=(1, 4, 2, 2), expert_list=True))
    if not any("_list" in x.label for x in s.programs.prefill.dispatches):
        pytest.skip("this adapter has no f16 tiles to emulate")
    want = s.logits(IDS)
    s.rebuild(dataclasses.replace(s.tuning, expert_depth=2, expert_units=2))
    assert sum("_k2_straight_d2" in x.label for x in s.programs.prefill.dispatches) == 2 * s.cfg.n_layers
    got = s.logits(IDS)
    assert max_rel(got, want) < 1e-3  # (the sums in another order, the f16 rows after them rounded anew)
    hf = hf_logits(d, IDS)
    assert max_rel(got, hf) < 1e-2
    # ... and the experts' gate/up with f16 sums (Tuning.acc_f16 names its role)
    s.rebuild(dataclasses.replace(s.tuning, acc_f16=("gate_up",)))
    labels = [x.label for x in s.programs.prefill.dispatches if "_list" in x.label]
    assert sum("_a16" in x for x in labels) == s.cfg.n_layers, labels
    assert max_rel(s.logits(IDS), hf) < 1e-2


def test_gpu_default_tuning_of_quantized_experts(wgpu_gpu):
    """The same tuning on the tiny-moe preset's q4_0 weights (the int8 mat-vecs' units loaded
    at once, int8_ilp): a decode step's logits as with those switches off."""
    import dataclasses

    from webgpu_llm.engine import Session, Settings
    from webgpu_llm.engine.settings import default_tuning
    from webgpu_llm.models.presets import preset_model

    cfg, tensors = preset_model("tiny-moe", "q4_0")
    s = Session.build(wgpu_gpu, cfg, tensors.get, Settings(batch=16), 64)
    t = dataclasses.replace(default_tuning(_h200(wgpu_gpu), cfg.hidden, cfg.head_dim, experts=True), mma="emulate")
    s.rebuild(dataclasses.replace(t, route_subgroups=False, router_splits=1, blocks=(), int8_ilp=False))
    want = s.next_logits(IDS[:9])
    s.rebuild(t)
    assert max_rel(s.next_logits(IDS[:9]), want) < 1e-4


def test_unfused_decode_matches_transformers(wgpu_gpu, tiny_dirs):
    """One dispatch an operation (the experts' dispatches as they are), on gpt-oss: sinks
    merged by the combine kernel, O's bias in its own mat-vec."""
    d = tiny_dirs["gpt_oss", "float32"]
    llm = LLM.load(d, gpu=wgpu_gpu, fused=False, progress=False)
    assert list(llm.session.stream(IDS[:9], 0, SamplingParams(), 12)) == hf_greedy(d, IDS[:9], 12)


@pytest.mark.parametrize("arch", ["qwen3moe", "gpt_oss"])
def test_batched_scheduler_matches_transformers(wgpu_gpu, tiny_dirs, arch):
    """Three requests on two slots through continuous batching: a step's rows (decode rows and
    prompt chunks of several sequences) are grouped by expert like a prompt's; each request
    gets transformers' greedy tokens; so too with the decode rows of several-row steps on
    split-K attention (batch_split_keys: gpt-oss's sinks and windows in the combine)."""
    import dataclasses

    d = tiny_dirs[arch, "float32"]
    llm = LLM.load(d, gpu=wgpu_gpu, ctx=64, progress=False)
    got, want = batched_greedy(llm.session, d, [IDS[:9], IDS[3:20], IDS[:4]])
    assert got == want
    llm.session.rebuild(dataclasses.replace(llm.session.tuning, batch_split_keys=True, attn_chunk=16))
    assert batched_greedy(llm.session, d, [IDS[:9], IDS[3:20], IDS[:4]])[0] == want


@pytest.mark.parametrize("arch", ARCHS)
def test_router_split_over_k_in_prompts(wgpu_gpu, tiny_dirs, arch):
    """Tuning.router_splits: the prompt router's matmul K split 3 ways (its partial sums
    added by the route kernel) gives the prompt's logits and the batched scheduler's tokens;
    a router with a bias (gpt-oss) stays whole."""
    import dataclasses

    d = tiny_dirs[arch, "float32"]
    s = LLM.load(d, gpu=wgpu_gpu, ctx=64, progress=False).session
    want = s.logits(IDS[:9])
    s.rebuild(dataclasses.replace(s.tuning, router_splits=3))
    # the router's matmul is the one writing the logits (on a GPU, O and down split K too)
    split = [x for x in s.programs.prefill.dispatches if x.label.startswith("matmul_partial_")
             and any(getattr(b, "label", "") == "moe_logits" for b in x.buffers)]
    assert len(split) == (0 if s.cfg.architecture.moe.bias else s.cfg.n_layers), [x.label for x in split]
    assert max_rel(s.logits(IDS[:9]), want) < 1e-5
    got, hf = batched_greedy(s, d, [IDS[:9], IDS[3:20]])
    assert got == hf
    with pytest.raises(ValueError, match="router_splits"):
        dataclasses.replace(s.tuning, router_splits=9).check()


@pytest.mark.parametrize("dtype", ["q4_0", "mxfp4"])
def test_quantized_experts_prompt_and_decode_agree(wgpu_gpu, dtype):
    """The tiny-moe preset's quantized experts: a decode step's logits equal the prompt path's
    for the same tokens (float activations), then within int8 rounding of them on the int8
    paths (mat-vecs, and the prompt's expert matmuls on emulated int8 tiles)."""
    import dataclasses

    from webgpu_llm.engine import Session, Settings
    from webgpu_llm.models.presets import preset_model

    cfg, tensors = preset_model("tiny-moe", dtype)
    s = Session.build(wgpu_gpu, cfg, tensors.get, Settings(batch=16), 64)
    s.rebuild(dataclasses.replace(s.tuning, int8=False, mma="off"))
    ids = IDS[:9]
    nxt = int(s.logits(ids)[-1].argmax())
    want = s.logits([*ids, nxt])[-1]
    assert max_rel(s.next_logits(ids), want) < 1e-4
    s.rebuild(dataclasses.replace(s.tuning, int8=True, mma="emulate", expert_tiles=(), quant_f16=False))
    assert sum("mma_matmul_" in d.label for d in s.programs.prefill.dispatches) >= 2 * cfg.n_layers
    # on an adapter with int8 tiles of its own, experts keep off them (wrong on an H100's); dense
    # weights take them (the path is decided here; nothing is built)
    from webgpu_llm.kernels.linear import Experts, LinearSpec, Segment
    m = s.programs
    if not m.mma_usable:
        dense = LinearSpec(k=64, segments=(Segment("q8_0", 32),))
        experts = dataclasses.replace(dense, experts=Experts(4, 2, rows=8))
        m.mma_usable = True
        try:
            assert m.mm_path(dense) == "int8" and m.mm_path(experts) == "simt"
        finally:
            m.mma_usable = False
    assert 1e-6 < max_rel(s.logits([*ids, nxt])[-1], want) < 3e-2
    assert 1e-6 < max_rel(s.next_logits(ids), want) < 3e-2
    if s.gpu.has_f16:  # the experts on f16 tiles of 32 tokens a workgroup (Tuning.expert_tiles)
        s.rebuild(dataclasses.replace(s.tuning, int8=False, mma="emulate", expert_tiles=(1, 4, 2, 2)))
        assert sum("f16_matmul_" in d.label and "1x4x2x2" in d.label for d in s.programs.prefill.dispatches) \
            == 2 * cfg.n_layers
        got = s.logits([*ids, nxt])[-1]
        assert 1e-6 < max_rel(got, want) < 1e-2
        # ... on the looping grid (Tuning.expert_loop): the same rows
        s.rebuild(dataclasses.replace(s.tuning, expert_loop=True, expert_list=False))  # (GPUs list by default)
        assert sum(d.label.startswith("f16_matmul_") and "_loop" in d.label for d in s.programs.prefill.dispatches) \
            == 2 * cfg.n_layers
        assert max_rel(s.logits([*ids, nxt])[-1], got) < 1e-6
        # ... on the grid of the group kernel's tile list (Tuning.expert_list): the same rows; a
        # batched step's few rows keep their own kernels
        s.rebuild(dataclasses.replace(s.tuning, expert_loop=False, expert_list=True))
        labels = [d.label for d in s.programs.prefill.dispatches]
        assert sum(x.startswith("f16_matmul_") and "_list" in x for x in labels) == 2 * cfg.n_layers, labels
        assert sum(x.startswith("moe_group_") and "_tiles32" in x for x in labels) == cfg.n_layers, labels
        assert max_rel(s.logits([*ids, nxt])[-1], got) < 1e-6
        # ... with two steps' loads in flight (Tuning.expert_depth): the same rows
        s.rebuild(dataclasses.replace(s.tuning, expert_depth=2))
        labels = [d.label for d in s.programs.prefill.dispatches]
        assert sum(x.startswith("f16_matmul_") and "_straight_d2" in x and "_list" in x for x in labels) \
            == 2 * cfg.n_layers, labels
        assert max_rel(s.logits([*ids, nxt])[-1], got) < 1e-6
        # ... and two units of 32 inputs a step (Tuning.expert_units)
        s.rebuild(dataclasses.replace(s.tuning, expert_units=2))
        assert sum("_k2_straight_d2" in d.label for d in s.programs.prefill.dispatches) == 2 * cfg.n_layers
        assert max_rel(s.logits([*ids, nxt])[-1], got) < 1e-6
        with pytest.raises(ValueError, match="expert_tiles"):
            dataclasses.replace(s.tuning, expert_depth=3).check()
        assert max_rel(s.next_logits(ids), want) < 3e-2
