"""Runs the whole characterization and assembles the one JSON document (see docs/characterize.md)."""

from __future__ import annotations

import argparse
import gc
import json
import math
import shlex
import time
from pathlib import Path
from typing import Any

from ..errors import GpuError, UserError
from ..runtime.gpu import BACKENDS, open_gpu
from . import ablations
from .breakdown import measure_breakdown
from .config import MIN_REPS, make_config
from .cuda import measure_cuda
from .derive import compare_with_study, derive_backend
from .environment import adapter_record, host_environment
from .harness import Bench, Progress, prepare_backend
from .methods import measure_methods
from .stats import CI_METHOD
from .sweep import measure_sweep

SCHEMA = "webgpu-llm/characterize"
SCHEMA_VERSION = 1


def characterize(args: argparse.Namespace) -> dict[str, Any]:
    t_start = time.perf_counter()
    cfg = make_config(args.quick, args.reps)
    progress = Progress(not getattr(args, "quiet", False))
    names = list(BACKENDS) if args.backend == "all" else [] if args.backend == "none" else [args.backend]
    browsers = list(getattr(args, "browser", None) or [])
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "command": command_line(args),
        "config": {**cfg.to_json(), "ci_method": CI_METHOD, "backend_arg": args.backend,
                   "adapter_arg": args.adapter},
        "environment": host_environment(),
        "backends": {},
    }
    if not cfg.min_reps_met:
        doc["config"]["note"] = (f"{cfg.reps} repetitions per point, fewer than the protocol's "
                                 f"{MIN_REPS}" + (" (--quick)" if cfg.quick else ""))
    for name in names:
        doc["backends"][name] = _run_backend(name, args, cfg, progress, explicit=args.backend != "all")
    if browsers:
        from .browser import measure_browser

        doc["browsers"] = {}
        for name in browsers:
            progress(f"{name}: the browser leg")
            doc["browsers"][name] = measure_browser(name, cfg, progress, getattr(args, "browser_adapter", None))
            if not doc["browsers"][name].get("available"):
                progress(f"{name}: unavailable ({doc['browsers'][name].get('error')})")
    legs = {**doc["backends"], **doc.get("browsers", {})}
    if not any(r.get("available") for r in legs.values()):
        errs = "; ".join(f"{b}: {r.get('error')}" for b, r in legs.items())
        raise GpuError(f"no backend could run the characterization ({errs})")
    if getattr(args, "no_cuda", False):
        doc["cuda"] = {"available": False, "note": "skipped (--no-cuda)"}
    else:
        doc["cuda"] = measure_cuda(cfg, progress)
    args.backends = [b for b, r in doc["backends"].items() if r.get("available")]
    args.progress = progress
    doc["ablations"] = _run_ablations(args, progress)
    doc["comparison"] = compare_with_study(doc)
    doc["timing"] = {"total_s": round(time.perf_counter() - t_start, 2)}
    progress(f"done in {doc['timing']['total_s']:.1f} s")
    return doc


def command_line(args: argparse.Namespace) -> str:
    """The options of this run, spelled as a command (what the report says to reproduce it)."""
    parts = ["webgpu-llm", "characterize", "--backend", args.backend]
    for b in getattr(args, "browser", None) or []:
        parts += ["--browser", b]
    if args.adapter:
        parts += ["--adapter", shlex.quote(args.adapter)]
    if args.quick:
        parts.append("--quick")
    if args.reps is not None:
        parts += ["--reps", str(args.reps)]
    for flag in ("no_cuda", "no_ablations"):
        if getattr(args, flag, False):
            parts.append("--" + flag.replace("_", "-"))
    for opt in ("model", "preset"):
        if getattr(args, opt, None):
            parts += [f"--{opt}", shlex.quote(str(getattr(args, opt)))]
    if getattr(args, "out", None):
        parts += ["--out", shlex.quote(str(args.out))]
    return " ".join(parts)


def _run_backend(name: str, args: argparse.Namespace, cfg: Any, progress: Progress,
                 explicit: bool) -> dict[str, Any]:
    t0 = time.perf_counter()
    progress(f"{name}: opening the device")
    notes = prepare_backend(name)
    try:
        settings = getattr(args, "settings", None)
        gpu = open_gpu(name, args.adapter, options=settings.gpu if settings else None)
    except (GpuError, UserError) as e:
        if explicit:
            raise
        progress(f"{name}: unavailable ({e})")
        return {"available": False, "error": str(e)}
    bench = Bench(gpu, cfg, progress)
    rec: dict[str, Any] = {"available": True, "adapter": adapter_record(gpu, bench.wait_method),
                           "notes": notes}
    progress(f"{name}: {gpu.name}")
    rec["methods"] = measure_methods(bench)
    rec["breakdown"] = measure_breakdown(bench)
    rec["sweep"] = measure_sweep(bench)
    rec["derived"] = derive_backend(rec)
    rec["elapsed_s"] = round(time.perf_counter() - t0, 2)
    del bench, gpu
    gc.collect()  # drop this backend's device before the next one opens
    return rec


def _run_ablations(args: argparse.Namespace, progress: Progress) -> dict[str, Any]:
    if getattr(args, "no_ablations", False):
        return {"status": "skipped", "note": "skipped (--no-ablations)", "results": []}
    try:
        results = ablations.run_ablations(args)
    except Exception as e:  # keep the micro-benchmarks even if the model run fails
        progress(f"ablations: failed ({type(e).__name__}: {e})")
        return {"status": "error", "results": [], "note": f"{type(e).__name__}: {e}"}
    problems = [f"result {i}: {p}" for i, r in enumerate(results) for p in ablations.validate_result(r)]
    out: dict[str, Any] = {"status": "ok", "results": results}
    if problems:
        out["problems"] = problems
    return out


# -- sanity and output -------------------------------------------------------------------------
def sanity_problems(doc: dict[str, Any]) -> list[str]:
    """What makes a run implausible: NaN, or the methods out of their expected order."""
    problems = []
    if _has_nan(doc):
        problems.append("NaN or infinity in the results")
    # native legs verify the naive method and the breakdown, the browser leg every method
    legs = [(b, r, r["methods"]["naive"].get("verified") and r["breakdown"].get("verified"))
            for b, r in doc.get("backends", {}).items() if r.get("available")]
    legs += [(b, r, all(v.get("verified") for v in r["methods"].values()))
             for b, r in doc.get("browsers", {}).items() if r.get("available")]
    for b, r, verified in legs:
        us = {m: v["per_dispatch_us"]["median"] for m, v in r["methods"].items()}
        if not us["sequential"] < us["naive"]:
            problems.append(f"{b}: sequential ({us['sequential']} µs) is not below naive ({us['naive']} µs)")
        if not us["batched"] < us["sequential"]:
            problems.append(f"{b}: batched ({us['batched']} µs) is not below sequential ({us['sequential']} µs)")
        if not verified:
            problems.append(f"{b}: dispatch counters do not match the dispatches issued")
    return problems


def _has_nan(x: Any) -> bool:
    if isinstance(x, float):
        return math.isnan(x) or math.isinf(x)
    if isinstance(x, dict):
        return any(_has_nan(v) for v in x.values())
    if isinstance(x, list):
        return any(_has_nan(v) for v in x)
    return False


def write_json(doc: dict[str, Any], path: Path) -> None:
    # allow_nan=False: a NaN would make the file invalid JSON for other tools.
    path.write_text(json.dumps(doc, indent=1, allow_nan=False, ensure_ascii=False) + "\n")
