"""`webgpu-llm chat`: an interactive conversation that keeps its context.

Ctrl-C while an answer streams stops that answer and returns to the prompt; the conversation
keeps the part answered (api.ChatSession.send). Ctrl-C at the prompt leaves the chat with exit
code 0, as /exit and Ctrl-D do: the user ended the chat and nothing was cut short (130, the
shell's code for a process stopped by Ctrl-C, is what the other commands return when Ctrl-C
interrupts their work, and what chat returns when it interrupts the model's load).
"""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType
from typing import Any

from ..errors import UserError
from .common import add_common, add_model, add_sampling, check_generation, load_llm, locate, sampling_kwargs
from .generate import speed_line

HELP = ("commands: /reset (forget the conversation), /stats (speed of the last answer), /exit (or Ctrl-D); "
        "Ctrl-C stops an answer, Ctrl-C at the prompt exits")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("chat", help="chat with the model interactively",
                       description="An interactive chat. The conversation is kept (only new tokens are "
                                   "processed each turn). " + HELP)
    p.add_argument("--system", default=None, metavar="TEXT", help="system message")
    p.add_argument("--verbose", "-v", action="store_true",
                   help="after each answer, its prompt and generation speed on stderr")
    add_model(p)
    add_sampling(p, max_tokens=512, temperature=0.7)
    add_common(p, json_output=False)  # a conversation has no single JSON result
    p.set_defaults(run=run)


class StopOnCtrlC:
    """While an answer streams, Ctrl-C sets `hit`. While the engine works on the next piece
    (`waiting`: a long prompt, say) it also raises KeyboardInterrupt at once: the engine can stop
    anywhere, leaving the work it queued to finish on its own. While a piece is being shown,
    the caller stops after it, so that the conversation keeps exactly what was shown."""

    def __init__(self) -> None:
        self.hit = False
        self.waiting = False  # inside the engine, between two pieces
        self.closing = False  # the answer is being wound down: let it finish its bookkeeping
        self._previous: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.hit = True
        if self.waiting and not self.closing:
            raise KeyboardInterrupt

    def __enter__(self) -> StopOnCtrlC:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not the main thread: Ctrl-C keeps its default
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def answer(session: Any, line: str, args: argparse.Namespace) -> bool:
    """Stream one answer to stdout. -> whether Ctrl-C stopped it."""
    pieces = session.send(line, max_tokens=args.max_tokens, stop=args.stop, **sampling_kwargs(args))
    with StopOnCtrlC() as ctrl_c:
        try:
            while not ctrl_c.hit:
                ctrl_c.waiting = True
                try:
                    piece = next(pieces)
                except StopIteration:
                    break
                finally:
                    ctrl_c.waiting = False
                sys.stdout.write(piece)
                sys.stdout.flush()
        except KeyboardInterrupt:
            ctrl_c.hit = True
        finally:
            ctrl_c.closing = True
            pieces.close()  # the session records the answer so far
    sys.stdout.write("\n")
    sys.stdout.flush()
    return ctrl_c.hit


def run(args: argparse.Namespace) -> int:
    check_generation(args)
    locate(args)
    llm = load_llm(args)
    if not llm.tokenizer.has_chat_template:
        raise UserError(f"{llm.source.path.name} has no chat template: use `webgpu-llm generate --raw`")
    session = llm.chat_session(args.system)
    tty = sys.stdin.isatty()
    if tty and not args.quiet:
        path = llm.source.path
        file = f" ({path.name})" if path.suffix == ".gguf" and path.stem != llm.config.name else ""
        print(f"chatting with {llm.config.name}{file} on {llm.gpu.name}. {HELP}", file=sys.stderr)
    answered = False
    while True:
        try:
            line = input(">>> " if tty else "")
        except EOFError:
            break
        except KeyboardInterrupt:  # at the prompt: leave, as /exit does
            if tty:
                sys.stderr.write("\n")
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/exit", "/quit", "/bye"):
            break
        if line == "/reset":
            session.reset()
            continue
        if line == "/stats":
            print(speed_line(llm.stats) if answered else "no answer yet", file=sys.stderr)
            continue
        if line in ("/help", "/?"):
            print(HELP, file=sys.stderr)
            continue
        turns = len(session.messages)
        try:
            stopped = answer(session, line, args)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            continue
        answered = True
        if stopped and not args.quiet:
            kept = len(session.messages) > turns
            print("[stopped; the conversation keeps the answer so far]" if kept
                  else "[stopped before the answer began; the question is dropped]", file=sys.stderr)
        if args.verbose:
            print(speed_line(llm.stats), file=sys.stderr)
    return 0
