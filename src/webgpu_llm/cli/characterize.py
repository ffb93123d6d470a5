"""`webgpu-llm characterize`: measure WebGPU dispatch overhead on this machine, per backend."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..runtime.gpu import BACKENDS
from .common import print_json


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "characterize",
        help="measure WebGPU dispatch overhead (naive/sequential/batched, per-call costs, size sweep)",
        description="Micro-benchmarks of WebGPU dispatch overhead on each backend, the way the "
                    "literature measures it (naive, sequential, batched), plus a per-call cost "
                    "breakdown, a kernel-size sweep with GPU timestamps, the CUDA launch cost "
                    "through torch when a CUDA device is present, and end-to-end ablations on a "
                    "model. Medians with 95 % confidence intervals; see docs/characterize.md.",
    )
    p.add_argument("--backend", choices=(*BACKENDS, "all", "none"), default="all",
                   help="which WebGPU implementation(s) to measure (default: %(default)s, every one that "
                        "opens; none: only --browser)")
    p.add_argument("--browser", action="append", choices=("chromium",), default=None, metavar="NAME",
                   help="also run the methods and the size sweep inside a browser page (chromium: Debian's "
                        "chromium through Playwright, WebGPU on SwiftShader unless --browser-adapter gpu)")
    p.add_argument("--browser-adapter", choices=("swiftshader", "gpu"), default="swiftshader",
                   help="the browser's WebGPU adapter (default: %(default)s; gpu: the machine's GPU)")
    p.add_argument("--adapter", default=None, metavar="NAME|INDEX",
                   help="adapter to use on each backend: an index from `webgpu-llm info` or part "
                        "of its name (default: the high-performance adapter)")
    p.add_argument("--quick", action="store_true",
                   help="fewer repetitions, dispatches and sizes (under 3 minutes on llvmpipe); "
                        "below the protocol's 30 repetitions, which the JSON records")
    p.add_argument("--reps", type=_positive, default=None, metavar="N",
                   help="timed repetitions per point, after warm-ups (default: 50, or 12 with --quick)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="write DIR/characterize.json, DIR/report.md and PNG plots")
    p.add_argument("--json", action="store_true", help="print the JSON document on stdout")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA reference through torch")
    g = p.add_argument_group("end-to-end ablations (need the model engine)")
    g.add_argument("--no-ablations", action="store_true", help="skip the end-to-end ablations")
    g.add_argument("--model", "-m", default=None, metavar="PATH|NAME",
                   help="model for the ablations: a path or a name as `generate --model` takes "
                        "(default: the bundled SmolLM2)")
    g.add_argument("--preset", default=None, metavar="NAME",
                   help="a model shape with random weights for the ablations, as in `bench`")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    p.set_defaults(run=run)


def _positive(s: str) -> int:
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return v


def run(args: argparse.Namespace) -> int:
    # Imported here so that `webgpu-llm --help` does not pay for matplotlib and the benchmarks.
    from .. import environment
    from ..characterize.report import summary_table, write_outputs
    from ..characterize.runner import characterize, sanity_problems

    args.settings = environment.settings()
    if args.model is not None:  # a name of a model on this machine becomes its path
        from ..models.source import locate_model

        args.model = str(locate_model(args.model, environment.model_search()).path)
    doc = characterize(args)
    if args.out is not None:
        written = write_outputs(doc, args.out)
        if not args.quiet:
            print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    if args.json:
        print_json(doc)
    else:
        print(summary_table(doc))
    for problem in sanity_problems(doc):
        print(f"warning: {problem}", file=sys.stderr)
    return 0
