#!/usr/bin/env python3
"""Write a bench preset's seeded random weights as a GGUF file that llama.cpp loads, so that the
peers (llama-bench, llama-server) and `webgpu-llm bench --model` time the very same file.

    python bench/preset_gguf.py qwen3-30b-a3b q4_0 /tmp/gg/qwen3-30b-a3b-q4_0.gguf
    python bench/preset_gguf.py gpt-oss-20b mxfp4 /tmp/gg/gpt-oss-20b-mxfp4.gguf

The weights are the preset's (models/presets.py: the same types, experts as 3-D tensors), the
metadata llama.cpp's converter writes for the family, and a vocabulary of placeholder tokens.
Exit status: 0, 2 for a bad preset or type.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from webgpu_llm.errors import UserError  # noqa: E402
from webgpu_llm.models.config import ModelConfig  # noqa: E402
from webgpu_llm.models.presets import preset_model  # noqa: E402


def _metadata(w, c: ModelConfig) -> None:
    import gguf

    a = c.architecture
    w.add_context_length(c.max_ctx)
    w.add_embedding_length(c.hidden)
    w.add_block_count(c.n_layers)
    w.add_feed_forward_length(c.intermediate)
    w.add_head_count(c.n_heads)
    w.add_head_count_kv(c.n_kv_heads)
    w.add_key_length(c.head_dim)
    w.add_value_length(c.head_dim)
    w.add_rope_dimension_count(c.rope_dim)
    w.add_rope_freq_base(c.rope_theta)
    w.add_layer_norm_rms_eps(c.rms_eps)
    if a.moe is not None:
        w.add_expert_count(a.moe.count)
        w.add_expert_used_count(a.moe.used)
        w.add_expert_feed_forward_length(a.moe.ffn)
    if any(a.windows):
        w.add_sliding_window(max(a.windows))
    if a.attn_softcap:
        w.add_attn_logit_softcapping(a.attn_softcap)
    if a.final_softcap:
        w.add_final_logit_softcapping(a.final_softcap)
    sc = c.rope_scaling or {}
    if sc.get("rope_type") == "yarn":
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(sc["factor"]))
        w.add_rope_scaling_orig_ctx_len(int(sc["original_max_position_embeddings"]))
    if c.long_rope:  # the factors are tensors; the converter writes these two keys beside them
        w.add_rope_scaling_attn_factors(c.rope_attention_factor())
        w.add_rope_scaling_orig_ctx_len(int(sc["original_max_position_embeddings"]))
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>".encode() for i in range(c.vocab)])
    w.add_token_scores([0.0] * c.vocab)
    w.add_token_types([1] * c.vocab)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)


def write(preset: str, dtype: str, out: Path, **cut: Any) -> None:
    """`cut`: preset_model's keywords (fewer layers, tokens or experts, every row drawn, ...)."""
    import gguf

    cfg, tensors = preset_model(preset, dtype, **cut)
    w = gguf.GGUFWriter(str(out), cfg.arch)
    _metadata(w, cfg)
    for name, t in tensors.items():
        data = t.data()
        if len(t.shape) == 1:  # vectors; the experts' biases as (experts, rows)
            m = cfg.architecture.moe
            if name.endswith("_exps.bias") and m is not None:
                data = data.reshape(m.count, -1)
            w.add_tensor(name, np.ascontiguousarray(data, np.float32))
        elif t.fmt in ("f32", "f16"):
            w.add_tensor(name, np.ascontiguousarray(data.reshape(t.shape)))
        else:  # block bytes, a row of bytes per matrix row
            qtype = gguf.GGMLQuantizationType[t.fmt.upper()]
            w.add_tensor(name, np.ascontiguousarray(data.reshape(*t.shape[:-1], -1)), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=True)
    w.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("preset")
    ap.add_argument("dtype")
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=0, help="keep the first N layers (a quick file of the shape)")
    ap.add_argument("--vocab", type=int, default=0, help="a vocabulary of N tokens instead of the preset's")
    ap.add_argument("--experts", type=int, default=0, help="N experts a layer instead of the preset's")
    ap.add_argument("--window", type=int, default=0, help="sliding windows of at most N keys")
    ap.add_argument("--every-row", action="store_true",
                    help="draw every matrix row (slower) instead of repeating a block of 64 rows, so that no two "
                         "heads, experts or tokens share weights")
    args = ap.parse_args(argv)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write(args.preset, args.dtype, args.out, n_layers=args.layers, vocab=args.vocab, experts=args.experts,
              window=args.window, **({"tile": 0} if args.every_row else {}))
    except UserError as e:
        print(f"preset_gguf: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
