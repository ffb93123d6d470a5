"""Probe: how fast could this decode step be? Its floor from what the GPU itself measures.

A decode step is a chain of dependent dispatches; each costs at least (a) a dispatch boundary
(the GPU drains one kernel before the next starts), and then the longer of (b) its own
critical path -- the dependent loads, barriers and reductions one workgroup runs even when no
other workgroup competes -- and (c) its weights' bytes at the streaming bandwidth. This
measures (a) and (a)+(b) in the real step, on the same GPU, in the same call:

  empty    as many dispatches of an empty kernel (one workgroup, a read-write binding, so
           the backend puts the same barrier between them): the boundary alone;
  one-wg   the real step with every mat-vec and attention dispatch cut to one workgroup
           (same kernels, same prologues and epilogues, garbage values): boundaries plus
           critical paths; per kernel kind, by leaving the kind out of it.

With (c) from the weight bytes and the streaming bandwidth (`--bw`, DESIGN.md: ~3.6 TB/s
Dawn, ~3.2 TB/s wgpu-native), two floors of the step:

  any design   dispatches x boundary + bytes / bandwidth (no kernel can do better without
               fewer dispatches);
  these kernels  per kind, count x max(one-wg cost, boundary + bytes / bandwidth).

    python bench/probe_floor.py --backend dawn --preset qwen2.5-0.5b --dtype f16 --out floor.json
    python bench/probe_floor.py --report floor.json
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from step_probe import StepProbe

from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.runtime.program import Kernel, Program

# cut to one workgroup: the kernels whose grid grows with the model (the sampler and the
# embedding are one or a few workgroups already, and keep the step's position moving)
CUT = ("matvec_", "attention")
EMPTY = Kernel("empty", """@group(0) @binding(0) var<storage, read_write> y: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) { if (g.x == 0xffffffffu) { y[0] = 1u; } }
""", ("y",))


def kind_bytes(cfg: Any, dtype: str) -> dict[str, tuple[str, int]]:
    """Matrix role and weight bytes per step of each mat-vec kind, by kernel-name prefix."""
    f = FORMATS[dtype]
    h, q, kv, i = cfg.hidden, cfg.q_dim, cfg.kv_dim, cfg.intermediate
    return {"matvec_qkv_": ("qkv", cfg.n_layers * f.nbytes(q + 2 * kv, h)),
            "matvec_add_attn_": ("o", cfg.n_layers * f.nbytes(h, q)),
            "matvec_silu_mul_": ("gate_up", cfg.n_layers * f.nbytes(2 * i, h)),
            "matvec_add_plain_": ("down", cfg.n_layers * f.nbytes(h, i)),
            "matvec_store_rmsnorm_": ("head", f.nbytes(cfg.vocab, h))}


def floors(res: dict[str, Any]) -> tuple[float, float]:
    """(any design, these kernels) floors in µs from a result's measurements. The kinds not
    cut (sampler, embedding) count as a boundary each: leaving them out of the step stops its
    position, which changes the attention's work, so their marginal cost is not theirs."""
    boundary, bw = res["boundary_us"], res["bandwidth_tb_s"] * 1e12
    any_design = res["dispatches"] * boundary + res["weight_bytes"] / bw * 1e6
    these = 0.0
    for r in res["kinds"]:
        cut = r["kernel"].startswith(CUT)
        these += r["count"] * (max(r["one_wg_us"], r["boundary_plus_bytes_us"]) if cut else boundary)
    return any_design, these


def report(res: dict[str, Any]) -> None:
    full, n, boundary = res["step_us"], res["dispatches"], res["boundary_us"]
    any_design, these = floors(res)
    mb, bw = res["weight_bytes"], res["bandwidth_tb_s"] * 1e12
    print(f"{res['preset']} {res['dtype']} {res['backend']}: step {full:.0f} us ({1e6 / full:.0f}/s); {n} dispatches: "
          f"empty {res['empty_step_us']:.0f} us ({boundary:.2f} each), one workgroup each {res['one_wg_step_us']:.0f} us; "
          f"{mb / 1e6:.0f} MB at {bw / 1e12:.1f} TB/s = {mb / bw * 1e6:.0f} us")
    print(f"floor, any design: {any_design:.0f} us ({1e6 / any_design:.0f}/s); these kernels: "
          f"{these:.0f} us ({1e6 / these:.0f}/s)")
    print("| kernel | role | count | one workgroup, us each | boundary + bytes at bw, us each |")
    print("| --- | --- | --- | --- | --- |")
    for r in res["kinds"]:
        one = f"{r['one_wg_us']:.2f}" if r["kernel"].startswith(CUT) else "(not cut)"
        print(f"| {r['kernel']} | {r['role']} | {r['count']} | {one} | {r['boundary_plus_bytes_us']:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="dawn")
    ap.add_argument("--preset", default="qwen2.5-0.5b")
    ap.add_argument("--dtype", default="f16")
    ap.add_argument("--bw", type=float, default=0.0, help="streaming bandwidth, TB/s (default: 3.6 Dawn, 3.2 wgpu)")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", help="write the measurements (JSON) here")
    ap.add_argument("--report", metavar="JSON", help="print the floors of a saved result instead of measuring")
    a = ap.parse_args()
    if a.report:
        with open(a.report) as f:
            report(json.load(f))
        return
    bw = (a.bw or (3.6 if a.backend == "dawn" else 3.2)) * 1e12
    probe = StepProbe(a.backend, a.preset, a.dtype, a.reps)
    gpu, cfg, step, t = probe.gpu, probe.cfg, probe.step, probe.time_us

    def one_wg(leave_out: str | None = None) -> Program:
        p = Program(gpu, "one-wg")
        for d in step.dispatches:
            if d.label != leave_out:
                p.add_bound(d.label, d.pipeline, d.bind_group, (1, 1, 1) if d.label.startswith(CUT) else d.grid)
        return p

    empty = Program(gpu, "empty")
    sink = gpu.buffer(256)
    for _ in step.dispatches:
        empty.add(EMPTY, {"y": sink}, (1, 1, 1))
    n = len(step.dispatches)
    full, t_one, t_empty = t(step), t(one_wg()), t(empty)
    boundary = t_empty / n
    sizes = kind_bytes(cfg, a.dtype)
    rows = []
    for kind, c in probe.kinds().items():
        role, nbytes = next((v for pre, v in sizes.items() if kind.startswith(pre)), (kind, 0))
        # boundary + critical path of one dispatch (by leaving the kind out)
        one = (t_one - t(one_wg(kind))) / c if kind.startswith(CUT) else float("nan")
        rows.append({"kernel": kind, "role": role, "count": c, "bytes": nbytes, "one_wg_us": one,
                     "boundary_plus_bytes_us": boundary + nbytes / c / bw * 1e6})
    res: dict[str, Any] = {
        "backend": a.backend, "preset": a.preset, "dtype": a.dtype, "dispatches": n, "step_us": full,
        "one_wg_step_us": t_one, "empty_step_us": t_empty, "boundary_us": boundary, "bandwidth_tb_s": bw / 1e12,
        "weight_bytes": sum(b for _, b in sizes.values()), "kinds": rows}
    res["floor_any_design_us"], res["floor_these_kernels_us"] = floors(res)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=1)
    report(res)


if __name__ == "__main__":
    main()
