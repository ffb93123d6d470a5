"""Where the prompt matmul on int8 matrix tiles spends its time: the MMA kernel (kernels/mma.py)
on one prompt shape, first checked against numpy (on the int8-rounded and on the float x), then
timed beside the SIMT tiled matmul and beside copies of itself with parts cut out of its WGSL
(the per-unit scaling, the tile products, both), optionally with K split (`--splits`) or extra
Dawn toggles (`--toggles`). It told which parts sit on the kernel's critical path (gate/up
217 µs against the SIMT's 369 on an H200) and is the starting point for the f16-tile prompts.
Needs Dawn on a GPU with subgroup matrices (an H200); writes JSON with --out.

    python bench/probe_mma_matmul.py --rows 9728 --k 896 --tokens 512 --fmt q8_0 --epilogue silu_mul
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from webgpu_llm.kernels.common import pack_state
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.kernels.linear import LinearSpec, Segment, matmul_grid, matmul_kernel
from webgpu_llm.kernels.mma import mma_matmul_grid, mma_matmul_kernel, quantize_grid, quantize_kernel
from webgpu_llm.models.presets import random_weight
from webgpu_llm.runtime.gpu import open_gpu
from webgpu_llm.runtime.program import Kernel, Program


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from reference import dequantize, int8_rounded  # the tests' numpy references of the kernels

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=9728)
    ap.add_argument("--k", type=int, default=896)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--fmt", default="q8_0")
    ap.add_argument("--epilogue", default="silu_mul")
    ap.add_argument("--splits", default="1", help="comma list of K splits to time (> 1: epilogue partial)")
    ap.add_argument("--toggles", default="", help="comma list of Dawn toggles to enable as well")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.toggles:  # before the instance exists (open_gpu's own setting is then ignored)
        from wgpudawn.backends.dawn import extras

        extras.set_instance_extras(enable_toggles=["allow_unsafe_apis", "skip_validation", *a.toggles.split(",")],
                                   disable_toggles=["timestamp_quantization"])
    gpu = open_gpu("dawn")
    rng = np.random.default_rng(0)
    raw = random_weight(a.fmt, a.rows, a.k, rng)
    wb = gpu.upload(FORMATS[a.fmt].pack(raw, a.k))
    xh = rng.standard_normal((a.tokens, a.k)).astype(np.float32)
    x = gpu.upload(xh)
    splits = [int(v) for v in a.splits.split(",")]
    y = gpu.buffer(a.tokens * a.rows * 4 * max(splits))
    nu = a.k // 32
    xq, xs = gpu.buffer(a.tokens * nu * 32), gpu.buffer(a.tokens * nu * 8)
    st = gpu.upload(pack_state(n=a.tokens))
    spec = LinearSpec(k=a.k, segments=(Segment(a.fmt, a.rows),), epilogue=a.epilogue)
    flop = 2.0 * a.tokens * a.rows * a.k
    mma = mma_matmul_kernel(spec)
    cuts = {
        "mma": mma.wgsl,
        "mma, no scaling": "\n".join(ln for ln in mma.wgsl.split("\n") if "acc[" not in ln or "bitcast" in ln),
        "mma, no tile products": mma.wgsl.replace("    tile_products(sgid, lane);", ""),
        "mma, neither": "\n".join(ln for ln in mma.wgsl.replace("    tile_products(sgid, lane);", "").split("\n")
                                   if "acc[" not in ln or "bitcast" in ln),
    }
    # less occupancy: workgroup memory the kernel touches but does not need
    for kb in (8, 20):
        pad = f"var<workgroup> pad: array<i32, {kb * 256}>;\n"
        cuts[f"mma, +{kb} KB workgroup memory"] = (mma.wgsl.replace("var<private> split: u32;", pad + "var<private> split: u32;")
                                                   .replace("  split = wid.z;", "  pad[lid] = i32(lid);\n  workgroupBarrier();\n"
                                                            "  split = select(wid.z, 99u, pad[(lid + 7u) % 128u] < 0);"))
    rows = []

    def time(name: str, kernel: Kernel, grid: tuple[int, int, int]) -> None:
        prog = Program(gpu)
        for _ in range(10):
            prog.add(kernel, {"st": st, "w0": wb, "x": x, "xq": xq, "xs": xs, "y": y}, grid)
        s = prog.time_gpu(1, reps=5) / 10
        rows.append({"kernel": name, "us": s * 1e6, "tflops": flop / s / 1e12})
        print(f"{name:28s} {s * 1e6:9.1f} us {flop / s / 1e12:7.2f} TFLOP/s", flush=True)

    time("quantize x", quantize_kernel(a.k), quantize_grid(a.k)(a.tokens))
    # correctness at this size: the matrix units' y against numpy on the int8-rounded x
    plain = LinearSpec(k=a.k, segments=(Segment(a.fmt, a.rows),))
    prog = Program(gpu)
    prog.add(mma_matmul_kernel(plain), {"st": st, "w0": wb, "xq": xq, "xs": xs, "y": y}, mma_matmul_grid(plain)(a.tokens))
    prog.run(1)
    got = gpu.read_array(y, np.float32, a.tokens * a.rows).reshape(a.tokens, a.rows)
    xr = int8_rounded(xh)
    w = dequantize(a.fmt, raw, a.k).astype(np.float64)
    for name, ref in (("int8-rounded x", xr @ w.T), ("float x", xh @ w.T)):
        err = float(np.abs(got - ref).max() / np.abs(ref).max())
        rows.append({"kernel": f"check against numpy, {name}", "rel_err": err})
        print(f"mma y against numpy ({name}): max rel err {err:.2e}", flush=True)
    for tm in (4, 8):
        time(f"simt tm={tm}", matmul_kernel(spec, tm), matmul_grid(spec, tm)(a.tokens))
    for sp in splits:
        if sp > 1:
            ss = LinearSpec(k=a.k, segments=(Segment(a.fmt, a.rows),), epilogue="partial", splits=sp)
            time(f"mma, {sp} K splits", mma_matmul_kernel(ss), mma_matmul_grid(ss)(a.tokens))
            time(f"simt tm=4, {sp} K splits", matmul_kernel(ss, 4), matmul_grid(ss, 4)(a.tokens))
    for name, src in cuts.items():
        try:
            time(name, Kernel(name, src, mma.bindings), mma_matmul_grid(spec)(a.tokens))
        except Exception as e:  # a probe: report and go on
            print(f"{name:28s} FAILED {' '.join(str(e).split())[:300]}")
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"args": vars(a), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
