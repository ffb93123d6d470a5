"""`webgpu-llm web`: serve the page that runs an exported model in the browser."""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

from .common import MODEL_HELP, add_common
from .export import DEFAULT_CTX, add_export_options, export


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "web",
        help="serve a page that chats with a model entirely in the browser (WebGPU)",
        description="Serve the browser runtime and an exported model (`webgpu-llm export`) over HTTP on "
                    "this machine. Open the URL it prints in a browser with WebGPU: the page downloads "
                    "the plan, weights and tokenizer once and then runs the model on the browser's GPU; "
                    "nothing is sent to the server after that. Without --plan, the model is exported "
                    "first (into --out, or a cache folder reused while the model file is unchanged).",
    )
    p.add_argument("--plan", type=Path, default=None, metavar="DIR", help="an export's folder (with plan.json)")
    p.add_argument("--model", "-m", default=None, metavar="PATH|NAME", help=MODEL_HELP + " (exported on the fly)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where an on-the-fly export goes (default: a folder under ~/.cache/webgpu-llm/exports, or $XDG_CACHE_HOME's)")
    add_export_options(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; "
                   "browsers give WebGPU only to https pages and to localhost)")
    p.add_argument("--port", type=int, default=8090, help="port (default: %(default)s; 0 = any free one)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    add_common(p, json_output=False)
    p.set_defaults(run=run)


def cache_dir(args: argparse.Namespace) -> Path:
    """The folder an on-the-fly export of --model with these options goes to."""
    from .. import environment
    from ..models.source import locate_model

    found = locate_model(args.model, environment.model_search())
    st = found.path.stat()
    key = f"{found.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{args.ctx}|{args.batch}|{args.tuning}|{args.prefill}|{args.backend}"
    name = f"{found.path.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    return environment.cache_dir() / "exports" / name


def exported(args: argparse.Namespace) -> Path:
    """The export of --model with the options of `add_export_options`: written into --out, or
    into the cache folder unless an export is already there; its folder."""
    plan_dir = args.out or cache_dir(args)
    if (plan_dir / "plan.json").is_file() and args.out is None:
        print(f"using the export in {plan_dir}", file=sys.stderr)
    else:
        print(f"exporting the model for the browser to {plan_dir} ...", file=sys.stderr)
        export(args, plan_dir)
    return plan_dir


def export_options(args: argparse.Namespace, ctx: int | None = None) -> argparse.Namespace:
    """Another command's --model and device options with the export's defaults (a context of
    `ctx` capped to the export's default): what `exported` takes."""
    return argparse.Namespace(model=args.model, out=None, ctx=min(ctx or DEFAULT_CTX, DEFAULT_CTX), batch=None,
                              tuning="auto", prefill="auto", backend=args.backend, adapter=args.adapter)


def run(args: argparse.Namespace) -> int:
    from ..engine.export import read_plan
    from ..web import WebServer

    if args.plan is not None:
        if args.model is not None:
            from ..errors import UserError

            raise UserError("give --plan (an export) or --model (exported here), not both")
        plan_dir = args.plan
        read_plan(plan_dir / "plan.json")
    else:
        plan_dir = exported(args)
    server = WebServer(args.host, args.port, {"model": plan_dir}, verbose=args.verbose)
    print(f"open {server.url}?plan=model/ in a browser with WebGPU (Ctrl-C stops)", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
