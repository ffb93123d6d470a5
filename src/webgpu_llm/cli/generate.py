"""`webgpu-llm generate PROMPT`: answer one prompt, streaming tokens to the terminal."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import UserError
from .common import (
    add_common,
    add_model,
    add_sampling,
    check_generation,
    load_llm,
    locate,
    print_json,
    read_text,
    sampling_kwargs,
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "generate", help="generate an answer to a prompt",
        description="Generate text for PROMPT. When the model has a chat template the prompt is "
                    "answered as one chat turn (like `ollama run MODEL PROMPT`); --raw feeds it as-is.")
    p.add_argument("prompt", nargs="?", default=None, help="the prompt (or use --file, or - for stdin)")
    p.add_argument("--file", "-f", default=None, metavar="PATH", help="read the prompt from a file")
    p.add_argument("--raw", action="store_true", help="no chat template: continue the text as-is")
    p.add_argument("--system", default=None, metavar="TEXT", help="system message for the chat template")
    p.add_argument("--truncate", action="store_true",
                   help="if the prompt and --max-tokens do not fit the context, keep the prompt's end that "
                        "leaves room for --max-tokens (at least one token of it) instead of failing")
    add_model(p)
    add_sampling(p)
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_generation(args)
    text = read_text(args.prompt, args.file, what="prompt")
    if not text:
        raise UserError("the prompt is empty: give PROMPT, --file PATH, or - to read stdin")
    locate(args)
    llm = load_llm(args)
    prompt: Any = text
    if args.system and not args.raw:
        prompt = [{"role": "system", "content": args.system}, {"role": "user", "content": text}]
    pieces = llm.generate(prompt, max_tokens=args.max_tokens, stop=args.stop, raw=args.raw, truncate=args.truncate,
                          **sampling_kwargs(args))
    if args.json:
        out = "".join(pieces)
        print_json({"text": out, "model": str(llm.source.path), "name": llm.config.name, "backend": llm.gpu.backend,
                    "adapter": llm.gpu.info.get("device", ""), **llm.stats.as_dict()})
        return 0
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if not args.quiet:
        print(speed_line(llm.stats), file=sys.stderr)
    return 0


def speed_line(s: Any) -> str:
    return (f"[{s.prompt_tokens} prompt tokens at {s.prefill_tok_s:.1f} tok/s, "
            f"{s.generated_tokens} generated at {s.decode_tok_s:.1f} tok/s]")
