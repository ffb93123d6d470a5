"""PyTorch CUDA peers through transformers, on the same shapes with random weights."""

from __future__ import annotations

import statistics
import time
from typing import Any

from ..models.config import ModelConfig


def torch_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _hf_config(tf: Any, cfg: ModelConfig, kw: dict[str, Any]) -> Any:
    """transformers' config of the preset's family (a peer of another family would time other math)."""
    if cfg.arch == "qwen2":
        return tf.Qwen2Config(**kw)
    if cfg.arch == "qwen3":
        return tf.Qwen3Config(head_dim=cfg.head_dim, **kw)
    if cfg.arch == "gemma3":
        a = cfg.architecture
        return tf.Gemma3TextConfig(head_dim=cfg.head_dim, query_pre_attn_scalar=round(a.attn_scale ** -2),
                                   sliding_window=max(a.windows, default=0) or None,
                                   layer_types=["sliding_attention" if a.window(i) else "full_attention"
                                                for i in range(cfg.n_layers)],
                                   rope_local_base_freq=a.local_rope_theta or 10000.0, **kw)
    if cfg.arch != "llama":
        raise ValueError(f"no torch peer for {cfg.arch}")
    return tf.LlamaConfig(head_dim=cfg.head_dim, **kw)


def _hf_model(cfg: ModelConfig, dtype: str, device: str = "cuda") -> Any:
    import torch
    import transformers as tf

    kw = dict(vocab_size=cfg.vocab, hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
              num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
              num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=4096, rms_norm_eps=cfg.rms_eps,
              rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings)
    conf = _hf_config(tf, cfg, kw)
    torch.manual_seed(0)
    td = {"f16": torch.float16, "f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    with torch.device(device):
        model = tf.AutoModelForCausalLM.from_config(conf, torch_dtype=td)
    return model.eval()


def bench_torch(cfg: ModelConfig, dtype: str, n_prompt: int = 16, n_gen: int = 128, n_pp: int = 512,
                reps: int = 3, compiled: bool = True, log: Any = None, device: str = "cuda") -> list[dict[str, Any]]:
    """Decode speed of transformers' generate (tg) and, unless `n_pp` is 0, the speed of one
    forward pass over an `n_pp`-token prompt (pp). `device` other than cuda is for tests."""
    import torch

    say = log or (lambda *_: None)
    if dtype not in ("f16", "f32", "bf16"):
        return []
    cuda = device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    model = _hf_model(cfg, dtype, device)
    ids = torch.randint(0, cfg.vocab, (1, n_prompt), device=device)
    rows = []

    def tg(m: Any, **kw: Any) -> float:
        def once() -> float:
            sync()
            t = time.perf_counter()
            m.generate(ids, max_new_tokens=n_gen, min_new_tokens=n_gen, do_sample=False, **kw)
            sync()
            return time.perf_counter() - t
        once()
        once()
        return statistics.median(n_gen / once() for _ in range(reps))

    with torch.inference_mode():
        rate = tg(model)
        row: dict[str, Any] = {"peer": "torch-cuda eager" if cuda else f"torch-{device} eager", "dtype": dtype,
                               "tg_tok_s": rate}
        if n_pp > 0:  # 0 skips the prompt measurement, as for the engine
            pp_ids = torch.randint(0, cfg.vocab, (1, n_pp), device=device)
            model(pp_ids)
            sync()
            pps = []
            for _ in range(reps):
                t = time.perf_counter()
                model(pp_ids)
                sync()
                pps.append(n_pp / (time.perf_counter() - t))
            row["pp_tok_s"] = statistics.median(pps)
        rows.append(row)
        say(f"  torch eager {dtype}: tg {rate:.1f} tok/s"
            + (f", pp {row['pp_tok_s']:.0f} tok/s" if "pp_tok_s" in row else ""))
        if compiled and cuda and dtype == "f16":  # the reference figure; compiling takes a minute or more
            try:
                # a static cache makes transformers compile the decoding forward itself
                # (torch.compile, CUDA graphs, step marking that generate() needs)
                model.generation_config.cache_implementation = "static"
                rate = tg(model)
                rows.append({"peer": "torch-cuda static+compile", "dtype": dtype, "tg_tok_s": rate})
                say(f"  torch compiled {dtype}: tg {rate:.1f} tok/s")
            except Exception as e:  # a peer failing must not end the run
                rows.append({"peer": "torch-cuda static+compile", "dtype": dtype, "error": str(e)[:300]})
    del model
    if cuda:
        torch.cuda.empty_cache()
    return rows
