"""End-to-end ablations on a model: the hook the model engine fills.

`run_ablations(args)` returns one dict per (backend, dtype, variant) measured; the runner puts
them under `ablations.results` of characterize.json, tabulates them in report.md, draws
`ablations.png`, and fills the fusion line of the comparison with the study. Until the engine
exists it raises NotImplementedError, and the report says the section was skipped.

What `args` carries (the argparse namespace of `webgpu-llm characterize`):
  args.backends: list[str]  — the backends that opened (resolved from --backend)
  args.adapter: str | None, args.model: str | None, args.preset: str | None
  args.quick: bool, args.reps: int (timed repetitions; use >= 5 decode runs, fewer in --quick)
  args.progress: Callable[[str], None] — prints a progress line on stderr

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
from typing import Any

REQUIRED = ("backend", "model", "dtype", "fused", "submit", "dispatches_per_token", "tok_s")
SUBMIT_MODES = ("per_token", "per_dispatch")


def run_ablations(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Decode-step ablations: fused vs unfused, per-token vs per-dispatch submit, dtypes.

    To be written on the model engine's decode Program: time `program.run()` (one submit per
    token) against `program.run_per_dispatch()`, with fused kernels and with the engine's
    unfused switch, for f32 / f16 / q8_0 / q4_0 on the `--preset` shape (default the bundled
    SmolLM2), each through `stats.summarize` over `args.reps` runs after warm-ups.
    """
    raise NotImplementedError("the model engine is not available yet")


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
