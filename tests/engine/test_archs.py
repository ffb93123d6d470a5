"""The newer decoder families (Qwen3, Gemma 2 and 3, Phi-3, SmolLM3) against transformers on the
CPU: tiny random models with what sets each apart switched on (tests/reference_models.py), in
safetensors (f32, f16) and GGUF (f32, f16), through the prompt path (logits), the fused and
unfused decode (a step's logits, greedy tokens) and the batched scheduler; what each
architecture's layer costs in decode dispatches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("torch")

from reference_models import (
    ARCH_BUILDERS,
    MOE_BUILDERS,
    PHI3_ORIGINAL_CTX,
    TINY_WINDOW,
    batched_greedy,
    gguf_tensor_name,
    hf_greedy,
    hf_logits,
    make_tiny_gguf,
    max_rel,
    tiny_model_dirs,
    unfold_decode,
)
from webgpu_llm.api import LLM
from webgpu_llm.engine import SamplingParams, Settings
from webgpu_llm.errors import ModelFileError
from webgpu_llm.models.config import SUPPORTED_ARCHS, config_from_gguf, config_from_hf
from webgpu_llm.models.source import hf_to_gguf_name

ARCHS = list(ARCH_BUILDERS)
IDS = [5, 17, 300, 999, 42, 7, 7, 7, 128, 64, 1000, 3, 250, 251, 252, 9, 11, 600, 2, 77, 18, 19, 401]
# decode dispatches of a layer: Llama's 5, a q/k-norm kernel (Qwen3), Gemma's two output norms
DISPATCHES = {"qwen3": 6, "gemma2": 7, "gemma3": 8, "phi3": 5, "smollm3": 5}


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return tiny_model_dirs(tmp_path_factory, ARCH_BUILDERS, seed=5)


def _hf_step_logits(d) -> np.ndarray:
    """transformers' logits of the decode step after prompt IDS[:9] (its greedy token as input)."""
    first = int(np.argmax(hf_logits(d, IDS[:9])[-1]))
    return hf_logits(d, [*IDS[:9], first])[-1]


def _load(path, gpu, **kw):
    return LLM.load(path, gpu=gpu, ctx=kw.pop("ctx", PHI3_ORIGINAL_CTX), progress=False, **kw)


# the f16 weights' tolerance, on an f32 KV cache; the f16 cache (the default beside f16 or
# quantized weights) rounds every key and value as well: test_f16_kv_cache_stays_close
F32_KV = Settings(kv="f32")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("float16", 1e-2)])
def test_logits_match_transformers(gpu, tiny_dirs, arch, dtype, tol):
    """23 tokens in prompt batches of 16 (the second ragged), past every sliding window."""
    d = tiny_dirs[arch, dtype]
    llm = _load(d, gpu, batch=16, settings=F32_KV)
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < tol


@pytest.mark.parametrize("arch", ARCHS)
def test_f16_kv_cache_stays_close(wgpu_gpu, tiny_dirs, arch):
    """f16 weights on the default (f16) cache, prompt and decode step: within 3e-2 of
    transformers, and the cache takes half the bytes of an f32 one."""
    d = tiny_dirs[arch, "float16"]
    llm = _load(d, wgpu_gpu, batch=16)
    m = llm.session.programs
    assert m.kv_f16 and m.buf.kv[0].size == 2 * llm.session.cfg.kv_dim * m.ctx * 2
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < 3e-2
    assert max_rel(llm.session.next_logits(IDS[:9]), _hf_step_logits(d)) < 3e-2


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("ftype,tol", [(None, 1e-4), ("f16", 1e-2)])
def test_gguf_logits_match_transformers(wgpu_gpu, tiny_dirs, tmp_path, arch, ftype, tol):
    """The same weights as llama.cpp's converter writes them: its tensor names and metadata,
    Gemma's norms with the 1 folded in, Phi-3's fused tensors and LongRoPE factor tensors,
    SmolLM3's Q/K rows permuted (and its NoPE layers implied). The f16 file is written from the
    f16 weights and checked against them: the rounding of the weights alone moves Gemma 2's
    logits 8e-3, which would leave the bound little room for the f16 tiles' rounded rows."""
    d = tiny_dirs[arch, "float32" if ftype is None else "float16"]
    llm = _load(make_tiny_gguf(tmp_path / "m.gguf", d, ftype), wgpu_gpu, settings=F32_KV)
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < tol
    assert max_rel(llm.session.next_logits(IDS[:9]), _hf_step_logits(d)) < tol  # a decode step
    if ftype is None:
        assert list(llm.session.stream(IDS[:9], 0, SamplingParams(), 12)) == hf_greedy(d, IDS[:9], 12)


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_decode_matches_transformers_fused_and_unfused(gpu, tiny_dirs, arch):
    """12 tokens after a 9-token prompt: the decode attention's window slides over the cache;
    a decode step's logits as transformers'."""
    d = tiny_dirs[arch, "float32"]
    want, step = hf_greedy(d, IDS[:9], 12), _hf_step_logits(d)
    for fused in (True, False):
        llm = _load(d, gpu, fused=fused)
        assert list(llm.session.stream(IDS[:9], 0, SamplingParams(), 12)) == want, fused
        assert max_rel(llm.session.next_logits(IDS[:9]), step) < 1e-4, fused
        if fused:
            unfold_decode(llm.session)
            assert len(llm.session.programs.decode) == 1 + llm.session.cfg.n_layers * DISPATCHES[arch]


@pytest.mark.parametrize("arch", ARCHS)
def test_gpu_default_tuning_matches_transformers(wgpu_gpu, tiny_dirs, arch):
    """A GPU's whole default tuning (default_tuning of an H200, its prompt tiles emulated):
    the decode attention in workgroups wider than its chunk, the q/k and output norms folded
    (fewer dispatches a layer than DISPATCHES), transformers' greedy tokens and step logits."""
    from types import SimpleNamespace

    from webgpu_llm.engine.settings import default_tuning

    d = tiny_dirs[arch, "float32"]
    want, step = hf_greedy(d, IDS[:9], 12), _hf_step_logits(d)
    llm = _load(d, wgpu_gpu)
    c = llm.session.cfg
    t = default_tuning(SimpleNamespace(is_cpu=False, backend=wgpu_gpu.backend, info={"device": "NVIDIA H200"}),
                       c.hidden, c.head_dim)
    assert t.fold_qk_norm and t.fold_post_norm and t.attn_wg >= 128
    llm.session.rebuild(dataclasses.replace(t, mma="emulate"))
    assert list(llm.session.stream(IDS[:9], 0, SamplingParams(), 12)) == want
    assert max_rel(llm.session.next_logits(IDS[:9]), step) < 1e-4
    unfolded = 1 + c.n_layers * DISPATCHES[arch]
    a = c.architecture
    if a.qk_norm or a.post_norms:  # a q/k-norm kernel less a layer; most output-norm kernels folded
        assert len(llm.session.programs.decode) <= unfolded - c.n_layers
    else:
        assert len(llm.session.programs.decode) == unfolded


@pytest.mark.parametrize("arch", ["gemma2", "phi3"])
def test_gpu_decode_switches_match_transformers(wgpu_gpu, tiny_dirs, arch):
    """The decode kernels a GPU's tuning takes (weights read by adjacent words, first units
    requested early, row groups of 8 threads, 16 keys a split so that windows start inside
    splits, four threads a key, the partials merged four splits a pass; then one split a head
    of several chunks) with soft-caps, windows and LongRoPE's scale."""
    from webgpu_llm.engine.settings import ROLES

    d = tiny_dirs[arch, "float32"]
    llm = _load(d, wgpu_gpu)
    t = llm.session.tuning
    want = hf_greedy(d, IDS[:9], 12)
    for chunk, cap in ((16, 0), (16, 1)):  # (one split a head, of two chunks past 16 keys)
        llm.session.rebuild(dataclasses.replace(t, mv=tuple((r, 64, 8, 1) for r in ROLES), spread=True, attn_wg=64,
                                                early=2, attn_chunk=chunk, combine_unroll=4, decode_splits=cap))
        assert list(llm.session.stream(IDS[:9], 0, SamplingParams(), 12)) == want, cap
    with pytest.raises(ValueError, match="overflow the partials"):  # 8 splits of 4 keys for 2 of 16
        llm.session.rebuild(dataclasses.replace(t, attn_chunk=4))


@pytest.mark.parametrize("arch", ["qwen3", "gemma3"])
@pytest.mark.parametrize("kv", ["f32", "f16"])
def test_qk_norm_folded_into_decode_attention(wgpu_gpu, tiny_dirs, arch, kv):
    """Tuning.fold_qk_norm: the decode attention norms, rotates and appends q and the new key
    itself (a dispatch less a layer), with keys read whole and by four threads each, splits of 16
    keys (the window starting inside one), and two splits of several chunks (the new key
    appended by the last), those two also with the first chunk's keys and values preloaded
    (AttentionSpec.preload): transformers' greedy tokens, the same step logits."""
    d = tiny_dirs[arch, "float32" if kv == "f32" else "float16"]
    llm = _load(d, wgpu_gpu, settings=Settings(kv=kv))
    s = llm.session
    unfold_decode(s, fold_post_norm=True)
    base = s.next_logits(IDS[:9])
    n = len(s.programs.decode)
    for wg, chunk, cap, pre in ((0, 16, 0, False), (64, 16, 0, False), (64, 4, 2, False), (64, 16, 0, True),
                                (64, 4, 2, True)):  # (2 splits of several 4-key chunks)
        s.rebuild(dataclasses.replace(s.tuning, fold_qk_norm=True, attn_wg=wg, attn_chunk=chunk, decode_splits=cap,
                                      attn_preload=pre))
        assert len(s.programs.decode) == n - s.cfg.n_layers
        assert any("qk_norm" in x.label for x in s.programs.decode.dispatches)
        assert any("qk_norm_preload" in x.label for x in s.programs.decode.dispatches) == pre
        assert max_rel(s.next_logits(IDS[:9]), base) < (1e-5 if kv == "f32" else 1e-3), wg
        if kv == "f32":
            assert list(s.stream(IDS[:9], 0, SamplingParams(), 12)) == hf_greedy(d, IDS[:9], 12)


@pytest.mark.parametrize("arch", ["gemma2", "gemma3"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_output_norms_folded_into_the_next_mat_vec(gpu, tiny_dirs, arch, dtype):
    """Tuning.fold_post_norm: each output norm and residual add in the next mat-vec's prologue
    (O's in gate/up's, down's in the next layer's QKV; the last layer keeps its kernels), with
    the q/k-norm fold beside it: two dispatches less a layer, the same step logits,
    transformers' greedy tokens, both backends."""
    d = tiny_dirs[arch, dtype]
    s = _load(d, gpu, settings=F32_KV).session
    unfold_decode(s)
    base, n = s.next_logits(IDS[:9]), len(s.programs.decode)
    qk = s.cfg.architecture.qk_norm
    s.rebuild(dataclasses.replace(s.tuning, fold_post_norm=True, fold_qk_norm=qk))
    assert len(s.programs.decode) == n - 2 * (s.cfg.n_layers - 1) - (s.cfg.n_layers if qk else 0)
    assert max_rel(s.next_logits(IDS[:9]), base) < (1e-5 if dtype == "float32" else 1e-3)
    if dtype == "float32":
        assert list(s.stream(IDS[:9], 0, SamplingParams(), 12)) == hf_greedy(d, IDS[:9], 12)


def test_split_k_prompt_matmuls_feed_the_output_norms(wgpu_gpu, tiny_dirs):
    """Gemma's O and down projections with K split over workgroups: the output-norm kernel
    sums the partials first."""
    d = tiny_dirs["gemma3", "float32"]
    llm = _load(d, wgpu_gpu, batch=16)
    llm.session.rebuild(dataclasses.replace(llm.session.tuning, splits=(("o", 2), ("down", 3))))
    assert max_rel(llm.logits(IDS), hf_logits(d, IDS)) < 1e-4


def test_longrope_takes_the_long_factors_past_the_original_context(wgpu_gpu, tiny_dirs):
    """LongRoPE's factors follow the context, as llama.cpp chooses them and as transformers
    does for a sequence of that length: short up to the original context (32), long past it;
    the same weights serve both (the parameter buffers are rewritten for the context)."""
    d = tiny_dirs["phi3", "float32"]
    long_ids = (IDS * 2)[:PHI3_ORIGINAL_CTX + 9]
    short = _load(d, wgpu_gpu, ctx=PHI3_ORIGINAL_CTX)
    assert max_rel(short.logits(IDS), hf_logits(d, IDS)) < 1e-4
    long = _load(d, wgpu_gpu, ctx=2 * PHI3_ORIGINAL_CTX)
    assert max_rel(long.logits(long_ids), hf_logits(d, long_ids)) < 1e-4
    assert max_rel(long.logits(IDS), hf_logits(d, IDS)) > 1e-3  # (transformers: short factors for 23 tokens)


@pytest.mark.parametrize("arch", ["gemma3", "phi3"])
def test_batched_scheduler_matches_transformers(wgpu_gpu, tiny_dirs, arch):
    """Three requests on two slots through continuous batching (thin matmuls for decode rows,
    prompt chunks beside them): each gets transformers' greedy tokens (Phi-3 within its
    original context, where transformers takes LongRoPE's short factors); so too with the
    decode rows of several-row steps on split-K attention of 16-key splits (batch_split_keys),
    and on two splits a head of several chunks (decode_splits, batch_decode_splits)."""
    d = tiny_dirs[arch, "float32"]
    llm = _load(d, wgpu_gpu, ctx=PHI3_ORIGINAL_CTX if arch == "phi3" else 64)
    got, want = batched_greedy(llm.session, d, [IDS[:9], IDS[3:20], IDS[:4]])
    assert got == want
    llm.session.rebuild(dataclasses.replace(llm.session.tuning, batch_split_keys=True, attn_chunk=16))
    assert batched_greedy(llm.session, d, [IDS[:9], IDS[3:20], IDS[:4]])[0] == want
    # ... in two splits a head at most, of several 4-key chunks (a one-row step's and a larger one's)
    llm.session.rebuild(dataclasses.replace(llm.session.tuning, batch_split_keys=True, attn_chunk=4, decode_splits=2,
                                            batch_decode_splits=2))
    assert batched_greedy(llm.session, d, [IDS[:9], IDS[3:20], IDS[:4]])[0] == want


def test_persistent_decode_covers_plain_layers_only(wgpu_gpu, tiny_dirs):
    """Persistent decode layers asked for: an architecture with kernels of its own falls back
    to one dispatch per kernel and says why."""
    llm = _load(tiny_dirs["gemma3", "float32"], wgpu_gpu, settings=Settings(persist=1))
    m = llm.session.programs
    assert "do not cover gemma3" in m.persist_note and m.tuning.persist == 0
    unfold_decode(llm.session)
    m = llm.session.programs
    assert len(m.decode) == 1 + m.cfg.n_layers * DISPATCHES["gemma3"]


@pytest.mark.slow
def test_persistent_decode_of_a_plain_new_architecture(wgpu_gpu, tiny_dirs):
    """SmolLM3 (NoPE layers are RoPE with frequency 0) as persistent layers: transformers' tokens."""
    d = tiny_dirs["smollm3", "float32"]
    llm = _load(d, wgpu_gpu, settings=Settings(persist=1))
    m = llm.session.programs
    assert m.persist_note == "" and len(m.decode) == 1 + m.cfg.n_layers
    assert list(llm.session.stream(IDS[:9], 0, SamplingParams(), 12)) == hf_greedy(d, IDS[:9], 12)


@pytest.mark.parametrize("arch", ARCHS)
def test_tensor_names_are_llama_cpps(tiny_dirs, arch):
    """Every tensor of a transformers checkpoint gets the GGUF name the gguf package's map of
    that architecture gives (what llama.cpp's converter writes)."""
    from safetensors import safe_open

    d = tiny_dirs[arch, "float32"]
    cfg = config_from_hf(__import__("json").loads((d / "config.json").read_text()), str(d))
    with safe_open(str(d / "model.safetensors"), "np") as f:
        names = list(f.keys())
    for name in names:
        assert hf_to_gguf_name(name, cfg.arch) == gguf_tensor_name(name, cfg.arch, cfg.n_layers), name


def test_window_and_rope_per_layer():
    """Gemma 3's pattern: five local layers (window, local RoPE base) then a global one; SmolLM3's
    NoPE layers rotate nothing; Phi-4-mini's partial rotary leaves the last quarter of a head."""
    base = {"vocab_size": 11, "hidden_size": 32, "intermediate_size": 16, "num_attention_heads": 2,
            "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 64}
    g = config_from_hf({**base, "model_type": "gemma3_text", "num_hidden_layers": 7, "sliding_window": TINY_WINDOW,
                        "rope_theta": 1e6, "rope_local_base_freq": 1e4}, "g")
    assert [g.architecture.window(i) for i in range(7)] == [TINY_WINDOW] * 5 + [0, TINY_WINDOW]
    assert g.inv_freq(0)[1] == np.float32(1 / 1e4 ** (2 / 16)) and g.inv_freq(5)[1] == np.float32(1 / 1e6 ** (2 / 16))
    s = config_from_hf({**base, "model_type": "smollm3", "num_hidden_layers": 8}, "s")
    assert [bool(s.inv_freq(i).any()) for i in range(8)] == [True, True, True, False] * 2
    p = config_from_hf({**base, "model_type": "phi3", "num_hidden_layers": 1, "partial_rotary_factor": 0.75}, "p")
    assert p.rope_dim == 12 and (p.inv_freq(0)[6:] == 0).all() and p.inv_freq(0)[:6].all()


@pytest.mark.parametrize("read", [lambda: config_from_hf({"model_type": "mamba", "hidden_size": 8}, "m"),
                                  lambda: config_from_gguf({"general.architecture": "mamba"}, {}, "m.gguf")],
                         ids=["config.json", "gguf"])
def test_unsupported_architecture_is_one_line_naming_it(read):
    with pytest.raises(ModelFileError) as e:
        read()
    msg = str(e.value)
    assert "'mamba'" in msg and all(a in msg for a in SUPPORTED_ARCHS) and len(msg.splitlines()) == 1


@pytest.mark.parametrize("arch", ["phi3", "gemma3", "gpt_oss"])
def test_attention_merged_apart_from_o(wgpu_gpu, tiny_dirs, tmp_path_factory, arch):
    """Tuning.merge_apart: the decode's split-K partials merged once by the combine kernel into
    a row that O reads (a dispatch more a layer), not in O's prologue: the same step logits in
    one split a head and in two of several chunks, transformers' greedy tokens; with Gemma's
    output norms and gpt-oss's sinks. Likewise O's merge in one pass (Tuning.merge_at_once)."""
    d = (MOE_BUILDERS[arch](tmp_path_factory.mktemp(arch), seed=3, dtype="float32") if arch in MOE_BUILDERS
         else tiny_dirs[arch, "float32"])
    s = _load(d, wgpu_gpu).session
    t = s.tuning
    want = hf_greedy(d, IDS[:9], 12)
    for chunk, cap in ((0, 0), (4, 2)):
        base_t = dataclasses.replace(t, attn_chunk=chunk or t.attn_chunk, decode_splits=cap)
        s.rebuild(base_t)
        base, n = s.next_logits(IDS[:9]), len(s.programs.decode)
        s.rebuild(dataclasses.replace(base_t, merge_apart=True))
        assert len(s.programs.decode) == n + s.cfg.n_layers
        assert sum("attn_combine" in x.label for x in s.programs.decode.dispatches) == s.cfg.n_layers
        assert max_rel(s.next_logits(IDS[:9]), base) < 1e-5, chunk
        assert list(s.stream(IDS[:9], 0, SamplingParams(), 12)) == want, chunk
        s.rebuild(dataclasses.replace(base_t, merge_at_once=True))
        assert max_rel(s.next_logits(IDS[:9]), base) < 1e-5, chunk
        assert list(s.stream(IDS[:9], 0, SamplingParams(), 12)) == want, chunk


@pytest.mark.parametrize("arch", ["qwen3", "gemma3", "gpt_oss"])
def test_decode_loads_at_once(wgpu_gpu, tiny_dirs, tmp_path_factory, arch):
    """Tuning.stage_at_once, merge_at_once and attn_preload together (each thread's loads of a
    staged input, of O's merge and of the attention's first chunk requested before their uses):
    the same step logits, in one split a head and in two of several chunks, and transformers'
    greedy tokens; with the q/k-norm fold, Gemma's output norms and windows, gpt-oss's sinks."""
    d = (MOE_BUILDERS[arch](tmp_path_factory.mktemp(arch), seed=4, dtype="float32") if arch in MOE_BUILDERS
         else tiny_dirs[arch, "float32"])
    s = _load(d, wgpu_gpu).session
    want = hf_greedy(d, IDS[:9], 12)
    for chunk, cap in ((0, 0), (4, 2)):
        base_t = dataclasses.replace(s.tuning, attn_chunk=chunk or s.tuning.attn_chunk, decode_splits=cap)
        s.rebuild(base_t)
        base = s.next_logits(IDS[:9])
        s.rebuild(dataclasses.replace(base_t, stage_at_once=True, merge_at_once=True, attn_preload=True))
        assert any("preload" in x.label for x in s.programs.decode.dispatches)
        assert max_rel(s.next_logits(IDS[:9]), base) < 1e-5, chunk
        assert list(s.stream(IDS[:9], 0, SamplingParams(), 12)) == want, chunk
