"""`webgpu-llm info`: the adapters of each backend, their features and limits."""

from __future__ import annotations

import argparse
from typing import Any

from .. import environment
from ..engine.settings import GPU_TUNING, LONG_HEAD_TILES
from ..errors import UserError, WebGpuLlmError
from ..kernels.mma import has_f16_mma, has_int8_mma
from ..runtime.gpu import (
    BACKENDS,
    MMA_FEATURE,
    bounds_checked,
    dawn_validates,
    list_adapters,
    subgroup_matrix_configs,
)
from .common import print_json

_SHOWN_LIMITS = ("max-storage-buffer-binding-size", "max-buffer-size",
                 "max-compute-workgroup-storage-size", "max-compute-invocations-per-workgroup",
                 "max-storage-buffers-per-shader-stage", "max-compute-workgroups-per-dimension")
_ML_FEATURES = ("shader-f16", "subgroup", "subgroups", "timestamp-query", MMA_FEATURE)


def matrix_line(configs: list[dict[str, Any]]) -> str:
    """One line on an adapter's matrix tiles and whether the prompt matmul uses them."""
    shapes = ", ".join(f"{c['component_type']}->{c['result_component_type']} {c['m']}x{c['n']}x{c['k']}"
                       for c in configs)
    f16, i8 = has_f16_mma(configs), has_int8_mma(configs)
    use = [what for ok, what in (
        (i8 and not f16, "quantized prompts run on the i8 16x16x32 tiles"),
        (f16, "prompts of every format but f32 run on the f16->f32 16x16x16 tiles (quantized weights dequantized "
              f"while staging; also the server's batched steps of up to {GPU_TUNING.thin_rows} rows, and the prompt "
              f"attention for heads of {LONG_HEAD_TILES} dimensions and more)"),
        (i8 and f16, "the i8 16x16x32 tiles where the f16 ones fail their check")) if ok]
    use = "; ".join(use) or "not used (no i8 16x16x32 or f16->f32 16x16x16 tile)"
    return f"matrix tiles: {shapes}; {use}"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("info", help="list WebGPU adapters, features and limits of each backend",
                       description="List the WebGPU adapters each backend sees, with the features "
                                   "and limits that matter for LLM inference.")
    p.add_argument("--backend", choices=(*BACKENDS, "all"), default="all", help="which backend (default: %(default)s)")
    p.add_argument("--all-features", action="store_true", help="list every feature, not only the ML ones")
    p.add_argument("--check", action="store_true",
                   help="open each adapter and run the kernels' own checks against numpy (f16 matrix tiles, f16 "
                        "mat-vec arithmetic): what the engine would use there")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    p.set_defaults(run=run)


def checks(backend: str, index: int) -> dict[str, str]:
    """The kernels' self-checks on adapter `index`: "pass", "fail", or "n/a" where the adapter
    lacks what they need (their results are what the engine takes)."""
    from ..kernels.linear import half_ok, half_usable
    from ..kernels.mma import f16_tiles_ok, f16_usable
    from ..runtime.gpu import open_gpu

    try:
        gpu = open_gpu(options=environment.gpu_options(backend=backend, adapter=str(index)))
    except WebGpuLlmError as e:
        return {"error": str(e)}
    def verdict(applies: bool, ok: Any) -> str:
        return "n/a" if not applies else "pass" if ok() else "fail"

    return {"f16_tiles": verdict(f16_tiles_ok(gpu), lambda: f16_usable(gpu)),
            "f16_matvec": verdict(half_ok(gpu), lambda: half_usable(gpu))}


def describe(backend: str, check: bool = False) -> dict[str, Any]:
    options = environment.gpu_options(backend=backend)
    try:
        adapters = list_adapters(options)
    except UserError as e:
        return {"backend": backend, "error": str(e), "adapters": []}
    except Exception as e:
        return {"backend": backend, "error": f"{type(e).__name__}: {e}", "adapters": []}
    out = []
    for i, a in enumerate(adapters):
        info = dict(a.info)
        out.append({
            "index": i,
            "device": info.get("device", ""),
            "vendor": info.get("vendor", ""),
            "adapter_type": info.get("adapter_type", ""),
            "backend_type": info.get("backend_type", ""),
            "description": info.get("description", ""),
            "features": sorted(a.features),
            "limits": {k: a.limits[k] for k in _SHOWN_LIMITS if k in a.limits},
            "subgroup_matrix_configs": subgroup_matrix_configs(a),
        })
        if backend == "dawn":
            out[-1]["bounds_checks"] = bounds_checked(options, a)
        if check:
            out[-1]["checks"] = checks(backend, i)
    r: dict[str, Any] = {"backend": backend, "adapters": out}
    if backend == "dawn":  # skipped for speed unless asked for (runtime/gpu.py)
        r["command_validation"] = dawn_validates(options)
    return r


def run(args: argparse.Namespace) -> int:
    names = list(BACKENDS) if args.backend == "all" else [args.backend]
    environment.gpu_options()  # the environment's own errors (a bad variable) first, as such
    report = [describe(b, args.check) for b in names]
    if args.json:
        print_json({"backends": report})
    else:
        for r in report:
            notes = [] if "command_validation" not in r else [
                "command validation on" if r["command_validation"]
                else f"command validation off; {environment.VALIDATE}=1 turns it on"]
            print(f"backend {r['backend']}:" + (f"  ({'; '.join(notes)})" if notes else ""))
            if r.get("error"):
                print(f"  unavailable: {r['error']}")
            if not r["adapters"] and not r.get("error"):
                print("  no adapters (install a Vulkan driver, e.g. `apt-get install mesa-vulkan-drivers`)")
            for a in r["adapters"]:
                feats = a["features"] if args.all_features else [f for f in a["features"] if f in _ML_FEATURES]
                print(f"  [{a['index']}] {a['device']} ({a['adapter_type']}, {a['backend_type']}) {a['description']}")
                print(f"      features: {', '.join(feats) or '-'}")
                if "bounds_checks" in a:
                    print("      bounds checks: " + ("on (WEBGPU_LLM_ROBUST=0 turns them off)" if a["bounds_checks"]
                                                     else "off (WEBGPU_LLM_ROBUST=1 turns them on)"))
                if a["subgroup_matrix_configs"]:
                    print(f"      {matrix_line(a['subgroup_matrix_configs'])}")
                if "checks" in a:
                    names = {"f16_tiles": "f16 tiles", "f16_matvec": "f16 mat-vec"}
                    print("      checks: " + ", ".join(f"{names.get(k, k)} {v}" for k, v in a["checks"].items()))
                for k, v in a["limits"].items():
                    print(f"      {k}: {v}")
    if not any(r["adapters"] for r in report):
        raise _NoAdapters()
    return 0


class _NoAdapters(WebGpuLlmError):
    exit_code = 1

    def __str__(self) -> str:
        return "no WebGPU adapter found: install a Vulkan driver (e.g. `apt-get install mesa-vulkan-drivers`)"
