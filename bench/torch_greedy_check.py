"""Greedy decoding of a small random Qwen2 on the webgpu device, compiled with the static
cache, against the CPU's in the same dtype: a check to run beside a kernel's timing on a GPU
(whose subgroups and drivers take paths the 2-core test machine does not).

    python bench/torch_greedy_check.py --backend dawn
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

try:
    import webgpu_llm  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch
import transformers

import webgpu_llm.torch as wt

DTYPES = {"f32": torch.float32, "f16": torch.float16}


def check(dtype: torch.dtype, prompt: int = 40, new: int = 40) -> bool:
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=500, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    ref = transformers.Qwen2ForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, prompt), generator=torch.Generator().manual_seed(2))
    kwargs = dict(max_new_tokens=new, do_sample=False, cache_implementation="static", pad_token_id=0)
    want = ref.to(dtype).generate(ids, **kwargs)
    dev = transformers.Qwen2ForCausalLM(cfg).eval()
    dev.load_state_dict(ref.state_dict())
    dev = dev.to("webgpu")
    dev.forward = torch.compile(dev.forward, backend="webgpu")
    with torch.no_grad():
        got = dev.generate(ids.to("webgpu"), **kwargs).cpu()
    diff = next((i for i in range(got.shape[1]) if got[0, i] != want[0, i]), None)
    fused = [g["fusions"].get("fuse_attention_into_linear") for g in wt.graph_report()]
    print(f"greedy {dtype}: {'same as the CPU' if diff is None else f'differs from position {diff}'}; "
          f"attention merged into O in the graphs: {fused}", flush=True)
    return diff is None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="dawn", choices=["wgpu", "dawn"])
    ap.add_argument("--dtypes", default="f32,f16")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    wt.set_backend(args.backend)
    if not wt.is_available():
        sys.exit("no WebGPU adapter")
    ok = [check(DTYPES[d]) for d in args.dtypes.split(",")]
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
