"""`webgpu-llm perplexity --file TEXT`: perplexity of a text, chunk by chunk."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import UserError
from .common import add_common, add_model, check_ctx, load_llm, locate, print_json, read_text


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "perplexity", help="score a text: perplexity over non-overlapping chunks",
        description="Tokenize the text (BOS as the model's metadata says), cut it into "
                    "non-overlapping chunks of --ctx tokens (a short last chunk counts; --ctx 0: the "
                    "model's maximum), evaluate each "
                    "chunk from an empty cache and average the negative log-likelihood over every "
                    "predicted position (2nd to last token of each chunk).")
    p.add_argument("--file", "-f", required=True, metavar="PATH", help="the text file to score (- for stdin)")
    add_model(p, ctx_default=512)
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_ctx(args)
    text = read_text(None, args.file, what="text")
    if not text:
        raise UserError(f"{args.file}: the text is empty")
    locate(args)
    llm = load_llm(args)
    ctx = llm.ctx  # --ctx, capped to the model's maximum
    ids = llm.tokenizer.encode(text)
    show = not args.json and not args.quiet and sys.stderr.isatty()

    def progress(i: int, n: int) -> None:
        if show:
            print(f"\rchunk {i}/{n}", end="", file=sys.stderr, flush=True)

    r = llm.perplexity(ids, ctx=ctx, progress=progress)
    if show:
        print(file=sys.stderr)
    if args.json:
        print_json({"ppl": r["ppl"], "tokens": r["tokens"], "chunks": r["chunks"], "predicted": r["predicted"],
                    "ctx": r["ctx"], "seconds": round(r["seconds"], 3), "model": str(llm.source.path),
                    "backend": llm.gpu.backend})
    else:
        print(f"perplexity {r['ppl']:.4f} over {r['tokens']} tokens ({len(r['chunks'])} chunks of {ctx}, "
              f"{r['predicted']} predicted) in {r['seconds']:.1f} s")
    return 0
