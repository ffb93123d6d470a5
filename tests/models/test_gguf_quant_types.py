"""A GGUF model in the K- and I-quants of issue 21 (Q2_K, Q3_K, IQ4_NL, IQ4_XS) loads and runs:
its logits equal those of the same model with the weights dequantized (by the gguf package)
to f32, on the prompt path and the decode path, with float and int8 activations.

The gguf package cannot quantize these types, so the weights are random valid blocks
(`random_weight`) rather than a quantized checkpoint; every role of a layer (QKV with mixed
formats, O, gate/up with mixed formats, down, the embedding and the LM head) takes one of them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from reference import dequantize
from reference_models import max_rel
from webgpu_llm.engine import Session, Settings
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.models.presets import random_weight
from webgpu_llm.models.source import open_model

gguf = pytest.importorskip("gguf")

# sizes the 256-value super-blocks need (every matrix's k a multiple of 256), odd elsewhere
HIDDEN, FFN, N_HEAD, N_KV, HEAD_DIM, VOCAB, LAYERS = 256, 512, 4, 2, 64, 301, 2
# each role's format per layer; QKV and gate/up mix formats across their segments
LAYER_TYPES = (
    {"attn_q": "q3_k", "attn_k": "q3_k", "attn_v": "q3_k", "attn_output": "iq4_xs",
     "ffn_gate": "q2_k", "ffn_up": "iq4_nl", "ffn_down": "q3_k"},
    {"attn_q": "iq4_xs", "attn_k": "iq4_xs", "attn_v": "q2_k", "attn_output": "q2_k",
     "ffn_gate": "iq4_xs", "ffn_up": "iq4_xs", "ffn_down": "iq4_nl"},
)
TOP_TYPES = {"token_embd": "iq4_nl", "output": "q2_k"}
IDS = [5, 17, 300, 99, 42, 7, 7, 7, 128, 64, 200, 3, 250, 251, 252, 9, 11, 160, 2, 77, 18, 19]

_GGML = {"q2_k": gguf.GGMLQuantizationType.Q2_K, "q3_k": gguf.GGMLQuantizationType.Q3_K,
         "iq4_nl": gguf.GGMLQuantizationType.IQ4_NL, "iq4_xs": gguf.GGMLQuantizationType.IQ4_XS}


def _shapes() -> dict[str, tuple[str, int, int]]:
    """GGUF name -> (format, rows, k) of each matrix."""
    out = {f"{n}.weight": (f, VOCAB, HIDDEN) for n, f in TOP_TYPES.items()}
    rows = {"attn_q": (N_HEAD * HEAD_DIM, HIDDEN), "attn_k": (N_KV * HEAD_DIM, HIDDEN),
            "attn_v": (N_KV * HEAD_DIM, HIDDEN), "attn_output": (HIDDEN, N_HEAD * HEAD_DIM),
            "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN), "ffn_down": (HIDDEN, FFN)}
    for i, types in enumerate(LAYER_TYPES):
        for role, fmt in types.items():
            out[f"blk.{i}.{role}.weight"] = (fmt, *rows[role])
    return out


def _write(path: Path, tensors: dict[str, tuple[np.ndarray, object]]) -> Path:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    for name, (data, raw_dtype) in tensors.items():
        w.add_tensor(name, data, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> tuple[Path, Path]:
    """The quantized file and its f32 twin (the same values, dequantized)."""
    rng = np.random.default_rng(21)
    quant: dict[str, tuple[np.ndarray, object]] = {}
    f32: dict[str, tuple[np.ndarray, object]] = {}
    for name, (fmt, rows, k) in _shapes().items():
        raw = random_weight(fmt, rows, k, rng, scale=1.0 if name == "token_embd.weight" else 2.0 / np.sqrt(k))
        quant[name] = (raw, _GGML[fmt])
        f32[name] = (dequantize(fmt, raw, k), None)
    for i in range(LAYERS):
        for norm in ("attn_norm", "ffn_norm"):
            v = (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
            quant[f"blk.{i}.{norm}.weight"] = f32[f"blk.{i}.{norm}.weight"] = (v, None)
    v = (1.0 + 0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
    quant["output_norm.weight"] = f32["output_norm.weight"] = (v, None)
    d = tmp_path_factory.mktemp("quant_types")
    return _write(d / "quant.gguf", quant), _write(d / "f32.gguf", f32)


def _session(path: Path, gpu) -> Session:
    src = open_model(path)
    # one KV cache type for both (auto would give the quantized model an f16 one)
    return Session.build(gpu, src.config, src.tensors.get, Settings(batch=16, kv="f32"), 64)


def test_the_file_holds_the_new_types(model_files):
    src = open_model(model_files[0])
    fmts = {t.fmt for t in src.tensors.values()}
    assert {"q2_k", "q3_k", "iq4_nl", "iq4_xs"} <= fmts and all(f in FORMATS for f in fmts)
    src.close()


def test_logits_equal_the_dequantized_model(wgpu_gpu, model_files):
    """Prompt path (22 tokens: two prompt batches of 16, the second ragged) and a decode step,
    float activations; then the int8 paths (int8 mat-vecs; the int8-tile prompt matmul,
    emulated with dot4I8Packed, for the formats that take it), whose activations are rounded
    to int8 per 32 values. One backend (the kernel tests run both)."""
    quant, ref = (_session(p, wgpu_gpu) for p in model_files)
    want_prompt, want_step = ref.logits(IDS), ref.next_logits(IDS[:9])
    assert max_rel(quant.logits(IDS), want_prompt) < 1e-4
    assert max_rel(quant.next_logits(IDS[:9]), want_step) < 1e-4
    quant.rebuild(dataclasses.replace(quant.tuning, int8=True, mma="emulate"))
    labels = [d.label for d in quant.programs.prefill.dispatches]
    # on int8 tiles: layer 0's QKV, O and down, layer 1's gate/up and down; a matrix with a q2_k
    # segment keeps the float matmul
    assert sum("mma_matmul" in x for x in labels) == 5 and "matmul_silu_mul_q2_k+iq4_nl" in labels
    # the int8 paths ran: their error is the int8 rounding's, not the float sums' order
    assert 1e-5 < max_rel(quant.logits(IDS), want_prompt) < 3e-2
    assert 1e-5 < max_rel(quant.next_logits(IDS[:9]), want_step) < 3e-2


def test_presets_take_llama_cpp_fallback_types():
    """Random-weight presets lay out a `dtype` model as llama.cpp's quantizer would: a matrix
    whose rows are not a multiple of the type's block takes its fallback type, so that every
    preset loads in every type (Qwen2.5-0.5B is 896 wide: only its down projection is Q3_K)."""
    from webgpu_llm.models.presets import DTYPES, PRESETS, file_type, preset_model

    assert file_type("q3_k", 896) == "iq4_nl" and file_type("q4_k", 896) == "q5_0"
    assert file_type("q6_k", 4864) == "q6_k" and file_type("q2_k", 72) == "f16"
    _, tensors = preset_model("qwen2.5-0.5b", "q3_k")
    assert tensors["blk.0.ffn_down.weight"].fmt == "q3_k" and tensors["blk.0.attn_q.weight"].fmt == "iq4_nl"
    for preset in PRESETS:
        for dtype in DTYPES:
            for t in preset_model(preset, dtype)[1].values():
                assert len(t.shape) == 1 or FORMATS[t.fmt].check_k(t.shape[-1]) is None, (preset, dtype, t.name)
