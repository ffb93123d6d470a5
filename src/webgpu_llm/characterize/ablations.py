"""End-to-end ablations on a model: the hook the model engine fills.

`run_ablations(args)` returns one dict per (backend, dtype, variant) measured; the runner puts
them under `ablations.results` of characterize.json, tabulates them in report.md, draws
`ablations.png`, and fills the fusion line of the comparison with the study. Until the engine
`--quick` runs them on a tiny random preset (CI's software adapter); otherwise on the bundled
SmolLM2 and on its shape with random weights in f32, f16, q8_0 and q4_0 (or `--model`/`--preset`).

What `args` carries (the argparse namespace of `webgpu-llm characterize`):
  args.backends: list[str]  — the backends that opened (resolved from --backend)
  args.adapter: str | None, args.model: str | None, args.preset: str | None
  args.quick: bool, args.reps: int (timed repetitions; use >= 5 decode runs, fewer in --quick)
  args.progress: Callable[[str], None] — prints a progress line on stderr
  args.settings: Settings (optional) — the engine's settings from the command line's edge

Each result dict (keys marked * are required; `validate_result` checks them):
  *backend: "wgpu" | "dawn"
  *model: str                     e.g. "qwen2.5-0.5b (preset, random weights)" or a file name
  *dtype: str                     "f32" | "f16" | "q8_0" | "q4_0" | ...
  *fused: bool                    fused kernels (ours) or the unfused one-op-per-kernel graph
  *submit: str                    "per_token" (one submit per decode step, ours) or
                                  "per_dispatch" (the study's pattern: every dispatch submitted)
  *dispatches_per_token: int
  *tok_s: {"median": float, "ci95": [lo, hi], ...}   decode tokens per second (stats.summarize)
  ms_per_token: {"median": ..., "ci95": [...]} | None
  gpu_ms_per_token: float | None  GPU time of one step (timestamp queries), if measured
  overhead_share: float | None    1 - gpu_ms_per_token / median ms_per_token: the share of a
                                  step's wall time that is not kernel time
  variant: str                    a short label for tables; derived from fused/submit if absent
  note: str
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

REQUIRED = ("backend", "model", "dtype", "fused", "submit", "dispatches_per_token", "tok_s")
SUBMIT_MODES = ("per_token", "per_dispatch")


QUICK = {"preset": "tiny", "dtypes": ("q4_0",), "n_gen": 8, "reps": 3}
FULL_DTYPES = ("f32", "f16", "q8_0", "q4_0")
# (fused, submit) variants: ours, fusion off, and the study's pattern
VARIANTS = ((True, "per_token"), (False, "per_token"), (False, "per_dispatch"), (True, "per_dispatch"))


def _models(args: argparse.Namespace) -> list[tuple[str, str, Any, dict[str, Any]]]:
    """(label, dtype, config, tensors) of each model the ablations run on."""
    from ..models.presets import preset_model
    from ..models.source import open_model

    if args.model or (args.preset is None and not args.quick):
        src = open_model(args.model)  # default: the bundled SmolLM2
        kinds = sorted({t.fmt for n, t in src.tensors.items() if n.endswith("attn_q.weight")})
        out = [(f"{src.path.name}", "+".join(kinds), src.config, src.tensors)]
        if args.model is None:  # the same shape in each weight type (random weights)
            out += [("smollm2-135m (random)", d, *preset_model("smollm2-135m", d)) for d in FULL_DTYPES]
        return out
    preset = args.preset or QUICK["preset"]
    dtypes = QUICK["dtypes"] if args.quick else FULL_DTYPES
    return [(f"{preset} (random)", d, *preset_model(preset, d)) for d in dtypes]


def run_ablations(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Decode-step ablations on the engine: fused vs unfused kernels, one submit per token vs
    one per dispatch, per weight type; tokens/s over `reps` runs, GPU time of a step from
    timestamps, and the share of the step's wall time that is not kernel time."""
    from ..engine import SamplingParams, Session, Settings
    from ..runtime.gpu import open_gpu
    from .stats import summarize

    n_gen = QUICK["n_gen"] if args.quick else 64
    reps = QUICK["reps"] if args.quick else max(5, min(args.reps or 5, 10))
    settings: Settings = getattr(args, "settings", None) or Settings()
    results: list[dict[str, Any]] = []
    for backend in args.backends:
        gpu = open_gpu(backend, args.adapter, options=settings.gpu)
        for label, dtype, cfg, tensors in _models(args):
            args.progress(f"ablations: {label} {dtype} on {backend}")
            eng = Session.build(gpu, cfg, tensors.get, replace(settings, batch=32), ctx=n_gen + 40)
            prompt = list(range(10, 26))
            for fused, submit in VARIANTS:
                eng.rebuild(fused=fused)
                per = submit == "per_dispatch"
                eng.time_decode(prompt, 4, per_dispatch=per)  # warm-up
                secs = [eng.time_decode(prompt, n_gen, per_dispatch=per) / n_gen for _ in range(reps)]
                step = eng.step_program(SamplingParams())
                r: dict[str, Any] = {
                    "backend": backend, "model": label, "dtype": dtype, "fused": fused, "submit": submit,
                    "dispatches_per_token": len(step),
                    "tok_s": summarize([1.0 / x for x in secs], digits=2),
                    "ms_per_token": summarize(secs, scale=1e3, digits=4),
                    "gpu_ms_per_token": None, "overhead_share": None,
                }
                if gpu.has_timestamps:
                    g = eng.step_gpu_seconds(prompt, reps=5) * 1e3
                    r["gpu_ms_per_token"] = round(g, 4)
                    r["overhead_share"] = round(max(0.0, 1 - g / r["ms_per_token"]["median"]), 4)
                results.append(r)
    return results


def validate_result(r: dict[str, Any]) -> list[str]:
    """Problems with one ablation result (empty when it is well formed)."""
    problems = [f"missing key {k!r}" for k in REQUIRED if k not in r]
    if r.get("submit") not in (None, *SUBMIT_MODES):
        problems.append(f"submit must be one of {SUBMIT_MODES}, not {r.get('submit')!r}")
    tok = r.get("tok_s")
    if tok is not None and not (isinstance(tok, dict) and "median" in tok and "ci95" in tok):
        problems.append("tok_s must be a stats.summarize() dict with median and ci95")
    return problems


def variant_label(r: dict[str, Any]) -> str:
    if r.get("variant"):
        return str(r["variant"])
    fused = "fused" if r.get("fused") else "unfused"
    submit = "1 submit/token" if r.get("submit") == "per_token" else "1 submit/dispatch"
    return f"{fused}, {submit}"
