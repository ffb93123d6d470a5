"""`webgpu-llm chat`: an interactive conversation that keeps its context."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..errors import UserError
from .common import add_common, add_model, add_sampling, load_llm

HELP = "commands: /reset (forget the conversation), /exit (or Ctrl-D)"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("chat", help="chat with the model interactively",
                       description="An interactive chat. The conversation is kept (only new tokens are "
                                   "processed each turn). " + HELP)
    p.add_argument("--system", default=None, metavar="TEXT", help="system message")
    add_model(p)
    add_sampling(p)
    p.set_defaults(temperature=0.7, max_tokens=512)
    add_common(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    llm = load_llm(args)
    if not llm.tokenizer.has_chat_template:
        raise UserError(f"{llm.source.path.name} has no chat template: use `webgpu-llm generate --raw`")
    session = llm.chat_session(args.system)
    tty = sys.stdin.isatty()
    if tty and not args.quiet:
        print(f"chatting with {llm.config.name} on {llm.gpu.name}. {HELP}", file=sys.stderr)
    while True:
        try:
            line = input(">>> " if tty else "")
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit", "/bye"):
            break
        if line == "/reset":
            session.reset()
            continue
        try:
            for piece in session.send(line, max_tokens=args.max_tokens, temperature=args.temperature,
                                      top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                                      repeat_penalty=args.repeat_penalty, seed=args.seed, stop=args.stop):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        sys.stdout.write("\n")
        sys.stdout.flush()
    return 0
