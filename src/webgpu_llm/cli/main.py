"""`webgpu-llm`: one entry point, one module per subcommand (each has `add_parser(sub)`)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import WebGpuLlmError

COMMANDS = ("generate", "chat", "perplexity", "info", "bench", "characterize")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webgpu-llm",
        description="Run LLMs on the GPU through WebGPU (wgpu-native or Dawn).",
        epilog="Run `webgpu-llm COMMAND --help` for the options of a command.\n\n"
               "environment:\n"
               "  WEBGPU_LLM_VALIDATE=1        keep Dawn's command validation (off by default: it\n"
               "                               costs CPU per dispatch; on to debug a shader or an op)\n"
               "  WEBGPU_LLM_PERSIST=auto|N    experimental persistent decode layers (see the README)\n"
               "  WEBGPU_LLM_DEBUG=1           show Python tracebacks on errors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False) or bool(os.environ.get("WEBGPU_LLM_DEBUG"))
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
