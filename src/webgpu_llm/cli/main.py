"""`webgpu-llm`: one entry point, one module per subcommand (each has `add_parser(sub)`)."""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__, environment
from ..errors import WebGpuLlmError

# command: its module (each has `add_parser(sub)`)
COMMANDS = {"generate": "generate", "chat": "chat", "serve": "serve", "perplexity": "perplexity",
            "list": "list_models", "info": "info", "bench": "bench", "characterize": "characterize",
            "embed": "embed", "export": "export", "web": "web"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webgpu-llm",
        description="Run LLMs on the GPU through WebGPU (wgpu-native or Dawn).",
        epilog="Run `webgpu-llm COMMAND --help` for the options of a command.\n\nenvironment:\n"
               + "\n".join(f"  {name}{what}" for name, what in environment.VARIABLES.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS.values():
        importlib.import_module(f"{__package__}.{module}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False) or environment.debug()
    try:
        return int(args.run(args) or 0)
    except WebGpuLlmError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # an internal failure: one line, the traceback with --debug
        if debug:
            raise
        print(f"error: internal error: {type(e).__name__}: {e} (run with --debug for details)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
