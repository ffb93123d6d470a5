"""Tiny random Hugging Face models, and their GGUF twins, as references for engine tests.

``make_tiny_llama`` / ``make_tiny_llama3`` / ``make_tiny_qwen2`` write a complete model directory
(config.json, model.safetensors, tokenizer.json, tokenizer_config.json with a chat template) with
seeded random weights in deliberately odd sizes (hidden 72, head_dim 24, GQA 3:1, vocab 1001), so
that kernels whose sizes are not multiples of a workgroup or block are exercised. The newer
families (``ARCH_BUILDERS``: Qwen3, Gemma 2 and 3, Phi-3, SmolLM3) come the same way, each with
what sets it apart switched on: sliding windows shorter than the test prompts, local and global
layers, soft-caps, a query scale other than 1/sqrt(head_dim), LongRoPE with partial rotary,
NoPE layers.
``hf_logits`` runs transformers on the CPU in float32 over such a directory. ``make_tiny_gguf``
writes the same weights as a GGUF file laid out the way llama.cpp's converter lays them out
(tensor names from the gguf package's own map of each architecture, Q/K row permutation for
the llama-style ones, rope_freqs for llama3 rope, Gemma's norms with the 1 folded in, Phi-3's
LongRoPE factor tensors), so the GGUF loading path can be checked against transformers too.

Needs torch and transformers for the builders and ``hf_logits``; ``make_tiny_gguf`` needs only
numpy and gguf.
"""

from __future__ import annotations

import functools
import json
import math
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data"

# Odd sizes on purpose: nothing here is a multiple of 32 or 64 except where the model forces it.
TINY_SHAPE: dict[str, Any] = {
    "vocab_size": 1001,
    "hidden_size": 72,
    "intermediate_size": 100,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "num_key_value_heads": 1,
    "head_dim": 24,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 256,
}

LLAMA3_ROPE_SCALING: dict[str, Any] = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # small, so that the smooth band of the llama3 ramp falls inside head_dim 24's frequencies
    "original_max_position_embeddings": 64,
}

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2  # ids of SPECIAL_TOKENS, given first to the BPE trainer

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

_SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "A tiny model with random weights still has to compute exactly the same numbers everywhere.",
    "Numbers like 3.14159, 42 and 1,000,000 appear in text too!",
    "def add(a, b):\n    return a + b\n",
    "WebGPU runs compute shaders written in WGSL on many kinds of GPU.",
)


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def tiny_tokenizer_json(vocab_size: int = TINY_SHAPE["vocab_size"]) -> str:
    """A byte-level BPE with exactly ``vocab_size`` ids, as tokenizer.json text.

    Exactly: the model's embedding has that many rows and llama.cpp refuses a GGUF whose token
    list and embedding disagree. The trainer may stop short when merges run out, so the rest is
    padded with unused special tokens.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = list(_SENTENCES)
    eval_txt = DATA_DIR / "eval.txt"
    if eval_txt.exists():  # more text gives real merges instead of padding
        corpus += eval_txt.read_text(encoding="utf-8").split("\n")
    tok.train_from_iterator(corpus, trainer)
    n = tok.get_vocab_size()
    if n < vocab_size:
        tok.add_special_tokens([f"<|extra_{i}|>" for i in range(vocab_size - n)])
    if tok.get_vocab_size() != vocab_size:
        raise RuntimeError(f"tokenizer has {tok.get_vocab_size()} ids, wanted {vocab_size}")
    return tok.to_str()


def _write_tokenizer(out: Path, vocab_size: int) -> None:
    (out / "tokenizer.json").write_text(tiny_tokenizer_json(vocab_size), encoding="utf-8")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": SPECIAL_TOKENS[EOS_ID],
        "pad_token": SPECIAL_TOKENS[PAD_ID],
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": TINY_SHAPE["max_position_embeddings"],
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Hugging Face models
# --------------------------------------------------------------------------------------------


def _torch_dtype(dtype: str) -> Any:
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    table.update({"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16})
    if dtype not in table:
        raise ValueError(f"dtype {dtype!r}: use float32, float16 or bfloat16")
    return table[dtype]


def _randomize(model: Any, seed: int) -> None:
    """Seeded weights with O(1) activations; norms and biases random too, so a kernel that
    ignores a norm weight or a bias cannot pass (HF would initialise them to 1 and 0)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                value = 1.0 + 0.2 * noise
            elif name.endswith(".bias"):
                value = 0.5 * noise
            elif p.ndim == 1:  # gpt-oss's attention sinks
                value = noise
            elif "embed_tokens" in name or name.startswith("lm_head"):
                # logits std ~2 (also through a tied head): a clear argmax, no overflow in f16
                value = noise * (2.0 / math.sqrt(p.shape[1]))
            else:
                value = noise / math.sqrt(p.shape[1])
            p.copy_(value.to(p.dtype))


def _save(model: Any, out: Path, dtype: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    model.to(_torch_dtype(dtype)).save_pretrained(out, safe_serialization=True)
    _write_tokenizer(out, model.config.vocab_size)
    return out


def _common_config(**overrides: Any) -> dict[str, Any]:
    cfg = dict(TINY_SHAPE)
    cfg.update(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, hidden_act="silu")
    cfg.update(overrides)
    return cfg


def make_tiny_llama(
    tmp_dir: str | Path,
    seed: int = 0,
    dtype: str = "float32",
    *,
    rope_scaling: dict[str, Any] | None = None,
    tie_word_embeddings: bool = False,
) -> Path:
    """Random LlamaForCausalLM (untied LM head by default) saved in ``tmp_dir``; returns the dir."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **_common_config(
            tie_word_embeddings=tie_word_embeddings,
            rope_scaling=rope_scaling,
            attention_bias=False,
            mlp_bias=False,
        )
    )
    model = LlamaForCausalLM(config)
    _randomize(model, seed)
    return _save(model, Path(tmp_dir), dtype)


def make_tiny_llama3(tmp_dir: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """make_tiny_llama with llama3 rope scaling (rope_type llama3, factor 8, original ctx 64)."""
    return make_tiny_llama(tmp_dir, seed, dtype, rope_scaling=dict(LLAMA3_ROPE_SCALING))


def make_tiny_qwen2(tmp_dir: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Random Qwen2ForCausalLM: Q/K/V biases, tied embeddings; returns the dir."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**_common_config(tie_word_embeddings=True, use_sliding_window=False))
    model = Qwen2ForCausalLM(config)
    _randomize(model, seed)
    return _save(model, Path(tmp_dir), dtype)


TINY_WINDOW = 5  # sliding window of the tiny models that have one: shorter than every test prompt


def make_tiny_qwen3(tmp_dir: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Random Qwen3ForCausalLM: per-head q/k RMSNorm, 4 query heads of 24 (q 96 wide, hidden
    72), GQA 2:1, tied embeddings."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**_common_config(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                          attention_bias=False, use_sliding_window=False))
    model = Qwen3ForCausalLM(config)
    _randomize(model, seed)
    return _save(model, Path(tmp_dir), dtype)


def _gemma_config(**overrides: Any) -> dict[str, Any]:
    cfg = _common_config(hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                         sliding_window=TINY_WINDOW, query_pre_attn_scalar=32)
    del cfg["hidden_act"]
    cfg.update(overrides)
    return cfg


def make_tiny_gemma2(tmp_dir: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Random Gemma2ForCausalLM: 4 layers alternating sliding-window (even) and global,
    attention and final logits soft-capped, query scale 32^-1/2 (head_dim 24)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    config = Gemma2Config(**_gemma_config(num_hidden_layers=4, attn_logit_softcapping=3.0,
                                          final_logit_softcapping=4.0, attn_implementation="eager"))
    model = Gemma2ForCausalLM(config)
    _randomize(model, seed)
    return _save(model, Path(tmp_dir), dtype)


def make_tiny_gemma3(tmp_dir: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Random Gemma3ForCausalLM (text): 6 layers, five with a sliding window and RoPE base 100,
    the sixth global with base 10000 (Gemma 3's pattern), q/k norms, query scale 32^-1/2."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(**_gemma_config(num_hidden_layers=6, rope_theta=10000.0, rope_local_base_freq=100.0))
    model = Gemma3ForCausalLM(config)
    _randomize(model, seed)
    return _save(model, Path(tmp_dir), dtype)


PHI3_ORIGINAL_CTX = 32  # LongRoPE's original context: the tests cross it with a longer context


def make_tiny_phi3(tmp_dir: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Random Phi3ForCausalLM as Phi-4-mini is made: fused qkv_proj and gate_up_proj, partial
    rotary (18 of 24 dims), LongRoPE (short/long factors, original context 32 of 256), and a
    sliding window on every layer (as Phi-3-mini-4k has), hidden 96, GQA 2:1."""
    from transformers import Phi3Config, Phi3ForCausalLM

    rng = np.random.default_rng(seed)
    pairs = 9
    rope = {"type": "longrope", "short_factor": (1.0 + rng.uniform(0, 1, pairs)).round(3).tolist(),
            "long_factor": (2.0 + 4 * rng.uniform(0, 1, pairs)).round(3).tolist()}
    config = Phi3Config(**_common_config(hidden_size=96, num_attention_heads=4, num_key_value_heads=2,
                                         partial_rotary_factor=0.75, original_max_position_embeddings=PHI3_ORIGINAL_CTX,
                                         rope_scaling=rope, sliding_window=TINY_WINDOW + 6, tie_word_embeddings=False))
    model = Phi3ForCausalLM(config)
    _randomize(model, seed)
    return _save(model, Path(tmp_dir), dtype)


def make_tiny_smollm3(tmp_dir: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Random SmolLM3ForCausalLM: 4 layers, the fourth without RoPE (no_rope_layer_interval 4,
    what llama.cpp assumes), tied embeddings."""
    from transformers import SmolLM3Config, SmolLM3ForCausalLM

    config = SmolLM3Config(**_common_config(num_hidden_layers=4, tie_word_embeddings=True))
    model = SmolLM3ForCausalLM(config)
    _randomize(model, seed)
    return _save(model, Path(tmp_dir), dtype)


def make_tiny_qwen3moe(tmp_dir: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Random Qwen3MoeForCausalLM: Qwen3's attention, every layer a mixture of 7 experts of
    40, 3 a token, their weights renormalized (norm_topk_prob, as Qwen3-30B-A3B)."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    config = Qwen3MoeConfig(**_common_config(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                             attention_bias=False, use_sliding_window=False, num_experts=7,
                                             num_experts_per_tok=3, moe_intermediate_size=40, norm_topk_prob=True,
                                             decoder_sparse_step=1, mlp_only_layers=[]))
    model = Qwen3MoeForCausalLM(config)
    _randomize(model, seed)
    return _save(model, Path(tmp_dir), dtype)


def make_tiny_mixtral(tmp_dir: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Random MixtralForCausalLM: Llama's attention, every FFN a mixture of 5 experts of 100,
    2 a token."""
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(**_common_config(num_local_experts=5, num_experts_per_tok=2, tie_word_embeddings=False))
    model = MixtralForCausalLM(config)
    _randomize(model, seed)
    return _save(model, Path(tmp_dir), dtype)


def make_tiny_gpt_oss(tmp_dir: str | Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Random GptOssForCausalLM: 4 layers alternating sliding-window (first) and global, a sink
    per head, biases on Q/K/V/O, the router and every expert, 5 experts of 40 (2 a token) with
    the clamped SwiGLU, YaRN RoPE (factor 8 over an original context of 32; its ramp's edges
    rounded as llama.cpp rounds them)."""
    from transformers import GptOssConfig, GptOssForCausalLM

    rope = {"rope_type": "yarn", "factor": 8.0, "beta_fast": 32.0, "beta_slow": 1.0, "truncate": True,
            "original_max_position_embeddings": 32, "rope_theta": 10000.0}
    config = GptOssConfig(**_common_config(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                           num_local_experts=5, num_experts_per_tok=2, intermediate_size=40,
                                           sliding_window=TINY_WINDOW, rope_parameters=rope, tie_word_embeddings=False,
                                           layer_types=["sliding_attention", "full_attention"] * 2,
                                           attn_implementation="eager"))
    model = GptOssForCausalLM(config)
    _randomize(model, seed)
    return _save(model, Path(tmp_dir), dtype)


MOE_BUILDERS = {"qwen3moe": make_tiny_qwen3moe, "mixtral": make_tiny_mixtral, "gpt_oss": make_tiny_gpt_oss}

ARCH_BUILDERS = {"qwen3": make_tiny_qwen3, "gemma2": make_tiny_gemma2, "gemma3": make_tiny_gemma3,
                 "phi3": make_tiny_phi3, "smollm3": make_tiny_smollm3}


@functools.lru_cache(maxsize=8)
def _load_hf(model_dir: str, mtime: float) -> Any:
    del mtime  # part of the cache key only: a rewritten directory is loaded again
    import torch
    from transformers import AutoModelForCausalLM

    # eager attention: the attention config is not saved, and some transformers versions load
    # Gemma 2 on SDPA, which leaves out its soft-capped scores (rows after the first then differ)
    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager",
                                                **dtype_kwarg(torch.float32)).eval()


def dtype_kwarg(dtype: Any) -> dict[str, Any]:
    """from_pretrained's dtype keyword: ``dtype`` since transformers 5, ``torch_dtype`` before."""
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def _hf_model(model_dir: str | Path) -> Any:
    path = Path(model_dir).resolve()
    return _load_hf(str(path), (path / "model.safetensors").stat().st_mtime)


def hf_logits(model_dir: str | Path, token_ids: Sequence[int]) -> np.ndarray:
    """transformers' logits, CPU float32, one sequence from position 0: ``[T, vocab]`` float32."""
    import torch

    model = _hf_model(model_dir)
    with torch.no_grad():
        out = model(torch.tensor([list(token_ids)], dtype=torch.long), use_cache=False).logits
    return out[0].float().numpy()


def hf_greedy(model_dir: str | Path, prompt_ids: Sequence[int], n: int) -> list[int]:
    """``n`` greedy tokens (argmax, no stop at EOS), recomputing the whole sequence each step:
    slow but free of any KV-cache logic, which is what the engine's cache is tested against."""
    ids = list(prompt_ids)
    for _ in range(n):
        ids.append(int(hf_logits(model_dir, ids)[-1].argmax()))
    return ids[len(prompt_ids) :]


def tiny_model_dirs(factory: Any, builders: dict[str, Any], seed: int) -> dict[tuple[str, str], Path]:
    """Every builder's tiny model in float32 and float16, keyed (arch, dtype), in directories
    of pytest's `tmp_path_factory`."""
    return {(arch, dtype): build(factory.mktemp(f"{arch}_{dtype}"), seed=seed, dtype=dtype)
            for arch, build in builders.items() for dtype in ("float32", "float16")}


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    """The largest absolute difference relative to the largest magnitude of `b`."""
    return float(np.abs(a - b).max() / np.abs(b).max())


def unfold_decode(session: Any, **keep: bool) -> None:
    """`session` rebuilt without the decode folds a GPU's tuning has on (`keep`: those to keep),
    for the tests whose dispatch counts start from one kernel per norm."""
    from dataclasses import replace

    t = session.tuning
    off = {k: False for k in ("fold_qk_norm", "fold_post_norm") if getattr(t, k) and not keep.get(k)}
    if off:
        session.rebuild(replace(t, **off))


def batched_greedy(session: Any, model_dir: Path, prompts: Sequence[Sequence[int]], n: int = 8) -> tuple[list, list]:
    """(the engine's, transformers') greedy tokens of `prompts` sent together to a scheduler of
    two slots and 12 rows a step: continuous batching, prompt chunks beside decode rows."""
    from webgpu_llm.engine import SamplingParams
    from webgpu_llm.engine.batch import scheduler

    want = [hf_greedy(model_dir, p, n) for p in prompts]
    s = scheduler(session, parallel=2, max_rows=12)
    try:
        return [c.wait() for c in [s.submit(list(p), SamplingParams(), n) for p in prompts]], want
    finally:
        s.close()


# --------------------------------------------------------------------------------------------
# GGUF
# --------------------------------------------------------------------------------------------


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Minimal reader that also handles bf16, which numpy (and so safetensors.numpy) cannot."""
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    base = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        buf = raw[base + begin : base + end]
        dt = info["dtype"]
        if dt == "BF16":
            arr = (np.frombuffer(buf, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(buf, dtype={"F32": np.float32, "F16": np.float16}[dt])
        tensors[name] = arr.reshape(info["shape"])
    return tensors


def _permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF keeps each head's rotary pairs as (i, i + d/2) (rotate_half); llama.cpp's llama arch
    rotates adjacent pairs (2i, 2i+1). Reorder each head's rows from [half0 | half1] to
    interleaved [h0[0], h1[0], h0[1], h1[1], ...]. Works for weights [rows, in] and biases [rows]."""
    rows = w.shape[0]
    half = rows // n_head // 2
    return w.reshape(n_head, 2, half, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_freq_factors(head_dim: int, theta: float, scaling: dict[str, Any]) -> np.ndarray:
    """Per-frequency divisors that llama.cpp applies to rope frequencies (tensor rope_freqs.weight),
    matching transformers' llama3 inv_freq: 1 for high frequencies, ``factor`` for low ones, a
    smooth blend between."""
    factor = float(scaling["factor"])
    lo, hi = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_ctx = float(scaling["original_max_position_embeddings"])
    inv_freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    wavelen = 2.0 * math.pi / inv_freq
    smooth = (old_ctx / wavelen - lo) / (hi - lo)
    out = 1.0 / ((1.0 - smooth) / factor + smooth)
    out = np.where(wavelen < old_ctx / hi, 1.0, out)
    out = np.where(wavelen > old_ctx / lo, factor, out)
    return out.astype(np.float32)


# GGUF architecture of each model_type, and those whose Q/K rows llama.cpp's converter permutes
# to adjacent RoPE pairs (LlamaModel and its subclasses)
_GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma2": "gemma2", "gemma3_text": "gemma3",
              "phi3": "phi3", "smollm3": "smollm3", "qwen3_moe": "qwen3moe", "mixtral": "llama",
              "gpt_oss": "gpt-oss"}
_EXPERT_RE = re.compile(r"^model\.layers\.(\d+)\.(?:mlp|block_sparse_moe)\.(?:experts\.(\d+)\.(\w+)|gate)\.weight$")
_EXPERT_KIND = {"gate_proj": "gate", "w1": "gate", "up_proj": "up", "w3": "up", "down_proj": "down", "w2": "down"}


def _stack_experts(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-expert tensors stacked as llama.cpp's converter writes them (blk.N.ffn_KIND_exps:
    (experts, rows, k)); the router as blk.N.ffn_gate_inp; the others under their HF names."""
    out: dict[str, np.ndarray] = {}
    experts: dict[str, dict[int, np.ndarray]] = {}
    for name, t in tensors.items():
        m = _EXPERT_RE.match(name)
        if m is None:
            out[name] = t
        elif m.group(2) is None:
            out[f"blk.{m.group(1)}.ffn_gate_inp.weight"] = t
        else:
            experts.setdefault(f"blk.{m.group(1)}.ffn_{_EXPERT_KIND[m.group(3)]}_exps.weight", {})[int(m.group(2))] = t
    for name, parts in experts.items():
        out[name] = np.stack([parts[e] for e in range(len(parts))])
    for name in [n for n in out if ".mlp.experts." in n]:  # gpt-oss: every expert in one x @ W tensor
        layer, kind = name.split(".")[2], name.rsplit(".", 1)[1]
        t, b = out.pop(name), f"blk.{layer}."
        if kind == "gate_up_proj":
            out[b + "ffn_gate_exps.weight"] = t[:, :, 0::2].transpose(0, 2, 1)
            out[b + "ffn_up_exps.weight"] = t[:, :, 1::2].transpose(0, 2, 1)
        elif kind == "gate_up_proj_bias":
            out[b + "ffn_gate_exps.bias"], out[b + "ffn_up_exps.bias"] = t[:, 0::2], t[:, 1::2]
        elif kind == "down_proj":
            out[b + "ffn_down_exps.weight"] = t.transpose(0, 2, 1)
        else:
            out[b + "ffn_down_exps.bias"] = t
    for name in [n for n in out if n.endswith(".mlp.router.weight") or n.endswith(".mlp.router.bias")]:
        out[f"blk.{name.split('.')[2]}.ffn_gate_inp.{name.rsplit('.', 1)[1]}"] = out.pop(name)
    return out
_PERMUTED = ("llama", "smollm3")


def gguf_tensor_name(hf_name: str, arch: str, n_layers: int) -> str:
    """The GGUF name of a transformers tensor, from the gguf package's map of `arch` (the one
    llama.cpp's converter uses)."""
    import gguf

    name = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper().replace("-", "_")], n_layers).get_name(
        hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise KeyError(f"no GGUF name for {hf_name} in {arch}")
    return name


def _tokenizer_for_gguf(hf_dir: Path) -> tuple[list[str], list[int], list[str]]:
    data = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    by_id: dict[int, str] = {i: t for t, i in data["model"]["vocab"].items()}
    special: set[int] = set()
    for added in data.get("added_tokens", []):
        by_id[added["id"]] = added["content"]
        if added.get("special"):
            special.add(added["id"])
    tokens = [by_id[i] for i in range(len(by_id))]
    import gguf

    types = [
        int(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL) for i in range(len(tokens))
    ]
    # tokenizers >= 0.20 stores merges as pairs; GGUF wants "a b" strings
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return tokens, types, merges


def _add_family_keys(w: Any, arch: str, cfg: dict[str, Any], rope: dict[str, Any], local: dict[str, Any],
                     head_dim: int) -> None:
    """The metadata llama.cpp's converter writes for the newer families, and two keys it has
    no need of for real models but these tiny ones do (llama.cpp reads both where present):
    Gemma's query scale where query_pre_attn_scalar is not head_dim (real Gemmas below 27B have
    them equal), and Gemma 3's local RoPE base where it is not 10000."""
    if arch.startswith("gemma"):
        w.add_sliding_window(cfg["sliding_window"])
        if cfg.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(cfg["final_logit_softcapping"])
        if arch == "gemma2" and cfg.get("attn_logit_softcapping"):
            w.add_attn_logit_softcapping(cfg["attn_logit_softcapping"])
        if cfg.get("query_pre_attn_scalar", head_dim) != head_dim:
            w.add_attention_scale(float(cfg["query_pre_attn_scalar"]) ** -0.5)
        theta_local = float(local.get("rope_theta", cfg.get("rope_local_base_freq") or 10000.0))
        if arch == "gemma3" and theta_local != 10000.0:
            w.add_rope_freq_base_swa(theta_local)
    if arch == "phi3":
        orig = int(rope.get("original_max_position_embeddings") or cfg["original_max_position_embeddings"])
        w.add_rope_scaling_orig_ctx_len(orig)
        w.add_sliding_window(cfg.get("sliding_window") or 0)
        scale = cfg["max_position_embeddings"] / orig
        if rope.get("long_factor"):
            w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0)


def make_tiny_gguf(path: str | Path, hf_dir: str | Path, ftype: str | None = None) -> Path:
    """Write the model in ``hf_dir`` (from a make_tiny_* builder) as a GGUF file at ``path``.

    ``ftype``: "f32" or "f16" for the 2-D weights (norms, biases and rope factors stay f32, as in
    llama.cpp's converter); default: f16 if the safetensors hold f16, else f32 (bf16 is written as
    f32, which is exact). The architecture is the model's (Q/K rows permuted for llama and smollm3;
    llama.cpp uses NeoX-style rope for the others). The tokenizer goes in as a "gpt2" BPE with
    the GPT-2 pre-tokenizer, no BOS added, and the chat template.
    """
    import gguf

    hf_dir, path = Path(hf_dir), Path(path)
    cfg = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    tensors = _read_safetensors(hf_dir / "model.safetensors")
    if ftype is None:
        ftype = "f16" if any(t.dtype == np.float16 for t in tensors.values()) else "f32"
    if ftype not in ("f32", "f16"):
        raise ValueError(f"ftype {ftype!r}: use f32 or f16")
    arch = _GGUF_ARCH[cfg["model_type"]]

    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    n_layers = cfg["num_hidden_layers"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    local = rope.get("sliding_attention") or {}
    rope = rope.get("full_attention", rope)  # Gemma 3: per layer type
    theta = float(cfg.get("rope_theta") or rope.get("rope_theta", 10000.0))  # v4 and v5 configs
    rope_dim = int(head_dim * float(rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor") or 1.0)))

    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(hf_dir.name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(rope_dim)
    w.add_rope_freq_base(theta)
    _add_family_keys(w, arch, cfg, rope, local, head_dim)
    if cfg.get("num_experts") or cfg.get("num_local_experts"):
        w.add_expert_count(int(cfg.get("num_experts") or cfg["num_local_experts"]))
        w.add_expert_used_count(int(cfg["num_experts_per_tok"]))
        if cfg.get("moe_intermediate_size") or arch == "gpt-oss":
            w.add_expert_feed_forward_length(int(cfg.get("moe_intermediate_size") or cfg["intermediate_size"]))
    if arch == "gpt-oss":
        w.add_sliding_window(cfg["sliding_window"])
    if rope.get("rope_type") == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if ftype == "f16" else gguf.LlamaFileType.ALL_F32)

    tokens, types, merges = _tokenizer_for_gguf(hf_dir)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(cfg.get("bos_token_id", BOS_ID))
    w.add_eos_token_id(cfg.get("eos_token_id", EOS_ID))
    w.add_pad_token_id(cfg.get("pad_token_id", PAD_ID))
    w.add_add_bos_token(False)
    tok_cfg = json.loads((hf_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    if tok_cfg.get("chat_template"):
        w.add_chat_template(tok_cfg["chat_template"])

    if rope.get("rope_type") == "llama3":
        # llama.cpp has no llama3 rope type: the converter bakes the scaling into this tensor
        w.add_tensor("rope_freqs.weight", llama3_rope_freq_factors(head_dim, theta, rope))
    if rope.get("rope_type", rope.get("type")) == "longrope":  # Phi-3: both factor lists as tensors
        w.add_tensor("rope_factors_long.weight", np.asarray(rope["long_factor"], np.float32))
        w.add_tensor("rope_factors_short.weight", np.asarray(rope["short_factor"], np.float32))

    tensors = _stack_experts(tensors)
    for name in sorted(tensors):
        data = tensors[name].astype(np.float32)
        if arch.startswith("gemma") and name.endswith("lm_head.weight"):
            continue  # the converter drops it: Gemma ties its head to the embedding
        if arch in _PERMUTED and ".self_attn.q_proj." in name:
            data = _permute_qk(data, n_head)
        elif arch in _PERMUTED and ".self_attn.k_proj." in name:
            data = _permute_qk(data, n_kv)
        if arch.startswith("gemma") and name.endswith("norm.weight"):
            data = data + np.float32(1.0)  # Gemma's RMSNorm multiplies by (1 + w): folded in
        if data.ndim >= 2 and ftype == "f16" and not name.endswith(("ffn_gate_inp.weight", ".bias")):  # routers stay f32
            data = data.astype(np.float16)
        gname = name if name.startswith("blk.") else gguf_tensor_name(name, arch, n_layers)
        w.add_tensor(gname, np.ascontiguousarray(data))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
