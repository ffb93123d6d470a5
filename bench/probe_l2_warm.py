"""Probe: how much faster is each decode kernel when its weights are already in L2?

The decode step is latency-bound (bench/NOTES.md): each mat-vec reads 1.6-17 MB at 1-1.3 TB/s
against ~3.3 TB/s of HBM read bandwidth. If part of that is the HBM round trip of each load
chain, weights prefetched into the 50 MB L2 while an earlier, latency-bound kernel runs (the
attention) would shorten the mat-vecs. This measures the ceiling of that idea before building
it: for each kernel kind of the real decode step, its cost in the step (the step's GPU time
without that kind's dispatches, "cold") against the cost of running each of its dispatches a
second time right after the first ("warm": the second reads what the first pulled into L2).
Values change when a dispatch runs twice (residual adds); the timing does not depend on them.
Each timing starts from the same position (a prefill first): the step advances it.

    python bench/probe_l2_warm.py --backend dawn --dtype f16 --out probe.json
"""

from __future__ import annotations

import argparse
import json

from step_probe import StepProbe

from webgpu_llm.runtime.program import Program

# The sampler advances the position each step: run twice, it would lengthen the attention.
STATEFUL = ("sample_", "embed")


def variant(gpu, step: Program, kind: str | None, mode: str) -> Program:
    p = Program(gpu, mode)
    for d in step.dispatches:
        if d.label == kind and mode == "omit":
            continue
        p.add_bound(d.label, d.pipeline, d.bind_group, d.grid)
        if (kind is None or d.label == kind) and mode == "double" and not d.label.startswith(STATEFUL):
            p.add_bound(d.label, d.pipeline, d.bind_group, d.grid)
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="dawn")
    ap.add_argument("--preset", default="qwen2.5-0.5b")
    ap.add_argument("--dtype", default="f16")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    probe = StepProbe(a.backend, a.preset, a.dtype, a.reps)
    gpu, step, t = probe.gpu, probe.step, probe.time_us
    base = t(step)
    kinds = probe.kinds()
    rows = []
    for kind, n in kinds.items():
        cold = base - t(variant(gpu, step, kind, "omit"))
        warm = float("nan") if kind.startswith(STATEFUL) else t(variant(gpu, step, kind, "double")) - base
        rows.append({"kernel": kind, "count": n, "cold_us": cold, "warm_us": warm})
    all_warm = t(variant(gpu, step, None, "double")) - base
    res = {"backend": a.backend, "preset": a.preset, "dtype": a.dtype, "step_us": base,
           "all_doubled_extra_us": all_warm, "kinds": rows}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(f"{a.preset} {a.dtype} {a.backend}: step {base:.0f} us; every dispatch run twice: +{all_warm:.0f} us")
    print("| kernel | count | cold us/step | warm us/step | warm/cold |")
    print("| --- | --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: -r["cold_us"]):
        print(f"| {r['kernel']} | {r['count']} | {r['cold_us']:.0f} | {r['warm_us']:.0f} | "
              f"{r['warm_us'] / max(r['cold_us'], 1e-9):.2f} |")


if __name__ == "__main__":
    main()
