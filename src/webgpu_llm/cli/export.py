"""`webgpu-llm export`: a model's Programs and weights as a plan the browser page replays."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import MODEL_HELP, add_common, print_json, quiet

DEFAULT_CTX = 2048  # the page's KV cache: a browser's GPU memory is shared with everything else


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="write a model as a plan for the browser runtime (WGSL, dispatch lists, weights, tokenizer)",
        description="Build a model's decode and prefill Programs as the engine does, for what every "
                    "WebGPU browser offers (no shader-f16, no subgroups, storage bindings of at most "
                    "128 MiB), and write them to DIR: plan.json (kernels, buffers, dispatch lists, "
                    "state layout, sampler variants, needed features and limits, weight manifest), "
                    "weights-NNN.bin (the weights in their GPU layout) and tokenizer.json. "
                    "`webgpu-llm web --plan DIR` serves the page that runs it.",
    )
    p.add_argument("--model", "-m", default=None, metavar="PATH|NAME", help=MODEL_HELP)
    p.add_argument("--out", "-o", type=Path, required=True, metavar="DIR", help="the folder to write")
    add_export_options(p)
    add_common(p)
    p.set_defaults(run=run)


def add_export_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ctx", type=int, default=DEFAULT_CTX, metavar="N",
                   help="context tokens the page's KV cache holds (default: %(default)s; capped to the model's)")
    p.add_argument("--batch", type=int, default=None, metavar="N",
                   help="prompt tokens a prefill chunk takes at most (default: 64 for --tuning cpu, 2048 for gpu, fewer where one binding holds fewer tokens)")
    p.add_argument("--tuning", choices=("auto", "cpu", "gpu"), default="auto",
                   help="kernel shapes: for a software adapter (cpu: SwiftShader, llvmpipe), a GPU, or "
                        "those of the adapter this machine exports on (default: %(default)s)")
    p.add_argument("--prefill", choices=("auto", "thin", "tiled"), default="auto",
                   help="prompt layers as thin matmuls (16 tokens a pass over the weights: much faster "
                        "on software adapters) or the engine's tiled matmuls; auto: thin for the CPU "
                        "tuning (default: %(default)s)")


def export(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Export --model with the options of `add_export_options` into `out`; the plan."""
    from .. import environment
    from ..engine.export import build_session, write_plan
    from ..engine.settings import CPU_BATCH, GPU_BATCH
    from ..errors import UserError

    if args.ctx < 2:
        raise UserError(f"--ctx {args.ctx}: must be at least 2")
    if args.batch is not None and args.batch < 1:
        raise UserError(f"--batch {args.batch}: must be at least 1")
    settings = environment.settings(gpu={"backend": args.backend, "adapter": args.adapter})
    batch = args.batch or {"cpu": CPU_BATCH, "gpu": GPU_BATCH}.get(args.tuning)
    src, session = build_session(args.model, settings, args.ctx, batch, args.tuning, args.prefill,
                                 search=environment.model_search())
    try:
        return write_plan(src, session, out)
    finally:
        src.close()


def run(args: argparse.Namespace) -> int:
    plan = export(args, args.out)
    m = plan["model"]
    summary = {
        "out": str(args.out), "model": m["name"], "ctx": m["ctx"], "batch": m["batch"],
        "weight_bytes": m["weight_bytes"], "files": [f["path"] for f in plan["weights"]["files"]],
        "kernels": len(plan["kernels"]),
        "dispatches_per_token": sum(len(plan["programs"][p]) for p in ("decode", "head", "sampler_greedy")),
        "features": plan["features"], "limits": plan["limits"], "built_on": plan["built_on"]["adapter"],
    }
    if args.json:
        print_json(summary)
    elif not quiet(args):
        print(f"wrote {args.out}/plan.json: {m['name']}, {m['weight_bytes'] / 2**20:.1f} MiB of weights in "
              f"{len(summary['files'])} file(s), {summary['kernels']} kernels, "
              f"{summary['dispatches_per_token']} dispatches a token, ctx {m['ctx']}, prefill chunks of "
              f"{m['batch']}", file=sys.stderr)
        print(f"serve it with: webgpu-llm web --plan {args.out}", file=sys.stderr)
    return 0
