"""Probe wgpu-native's cooperative matrices (`enable wgpu_cooperative_matrix;`) on the prompt
matmul shape: does each tile type compile, is it correct against numpy, and how many TFLOP/s
does it reach beside the engine's SIMT tiled matmul?

    python bench/probe_coopmat.py --m 512 --n 4864 --k 896 --out probe.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from webgpu_llm.kernels.common import pack_state
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.kernels.linear import LinearSpec, Segment, matmul_grid, matmul_kernel
from webgpu_llm.runtime.gpu import open_gpu
from webgpu_llm.runtime.program import Program


def coop_kernel(t: int, dtype: str, acc: str, tm: int, tn: int, a_row: str, b_col: str) -> str:
    """Each workgroup (one subgroup) computes a (tm*t) x (tn*t) block of y = x W^T."""
    f16 = "enable f16;\n" if "f16" in (dtype, acc) else ""
    ab, cc = f"coop_mat{t}x{t}<{dtype}, A>", f"coop_mat{t}x{t}<{acc}, C>"
    bb = f"coop_mat{t}x{t}<{dtype}, B>"
    lines = [f"{f16}enable wgpu_cooperative_matrix;",
             f"@group(0) @binding(0) var<storage, read> x: array<{dtype}>;",
             f"@group(0) @binding(1) var<storage, read> w: array<{dtype}>;",
             f"@group(0) @binding(2) var<storage, read_write> y: array<{acc}>;",
             "override M: u32; override N: u32; override K: u32;",
             "@compute @workgroup_size(32)",
             "fn main(@builtin(workgroup_id) wid: vec3<u32>) {",
             f"  let m0 = wid.y * {tm * t}u;", f"  let n0 = wid.x * {tn * t}u;"]
    for i in range(tm):
        for j in range(tn):
            lines.append(f"  var c{i}{j} = {cc}();")
    lines.append(f"  for (var k = 0u; k < K; k += {t}u) {{")
    for i in range(tm):
        lines.append(f"    let a{i} = {a_row}<{ab}>(&x[(m0 + {i * t}u) * K + k], K);")
    for j in range(tn):
        lines.append(f"    let b{j} = {b_col}<{bb}>(&w[(n0 + {j * t}u) * K + k], K);")
    for i in range(tm):
        for j in range(tn):
            lines.append(f"    c{i}{j} = coopMultiplyAdd(a{i}, b{j}, c{i}{j});")
    lines.append("  }")
    for i in range(tm):
        for j in range(tn):
            lines.append(f"  coopStoreT(c{i}{j}, &y[(m0 + {i * t}u) * N + n0 + {j * t}u], N);")
    lines.append("}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=512)
    ap.add_argument("--n", type=int, default=4864)
    ap.add_argument("--k", type=int, default=896)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    m, n, k = a.m, a.n, a.k
    gpu = open_gpu("wgpu")
    print("features:", sorted(gpu.features))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((n, k)) * 0.05).astype(np.float32)
    flop = 2.0 * m * n * k
    results = []

    def record(name: str, prog: Program, reps: int, out: np.ndarray, ref: np.ndarray) -> None:
        s = prog.time_gpu(1, reps=5) / reps
        err = float(np.abs(out - ref).max() / np.abs(ref).max())
        r = {"kernel": name, "us": s * 1e6, "tflops": flop / s / 1e12, "rel_err": err}
        results.append(r)
        print(f"{name:40s} {s * 1e6:9.1f} us {r['tflops']:7.2f} TFLOP/s  max rel err {err:.2e}", flush=True)

    # the engine's SIMT tiled matmul with f16 weights
    spec = LinearSpec(k=k, segments=(Segment("f16", n),))
    st = gpu.upload(pack_state(n=m))
    xb, wb, yb = gpu.upload(x), gpu.upload(FORMATS["f16"].pack(w.astype(np.float16), k)), gpu.buffer(m * n * 4)
    prog = Program(gpu)
    for _ in range(10):
        prog.add(matmul_kernel(spec), {"st": st, "w0": wb, "x": xb, "y": yb}, matmul_grid(spec)(m))
    ref16 = x @ w.astype(np.float16).astype(np.float32).T
    prog.run(1)
    record("simt tiled f16 weights (engine)", prog, 10, gpu.read_array(yb, np.float32, m * n).reshape(m, n), ref16)

    for t, dtype, acc, tm, tn in ((8, "f32", "f32", 2, 2), (8, "f32", "f32", 4, 4), (16, "f16", "f32", 2, 2),
                                  (16, "f16", "f32", 4, 2), (16, "f16", "f16", 2, 2)):
        for a_row, b_col in (("coopLoadT", "coopLoad"),):
            name = f"coop {t}x{t} {dtype}->{acc} {tm}x{tn} tiles"
            try:
                src = coop_kernel(t, dtype, acc, tm, tn, a_row, b_col)
                npd = np.float16 if dtype == "f16" else np.float32
                xb2, wb2 = gpu.upload(x.astype(npd)), gpu.upload(w.astype(npd))
                yb2 = gpu.buffer(m * n * (2 if acc == "f16" else 4))
                pipe = gpu.device.create_compute_pipeline(
                    layout="auto", compute={"module": gpu.device.create_shader_module(code=src), "entry_point": "main",
                                            "constants": {"M": m, "N": n, "K": k}})
                bg = gpu.bind_group(pipe, [xb2, wb2, yb2], name)
                prog = Program(gpu)
                for _ in range(10):
                    prog.add_bound(name, pipe, bg, (n // (tn * t), m // (tm * t), 1))
                prog.run(1)
                out = gpu.read_array(yb2, np.float16 if acc == "f16" else np.float32, m * n).astype(np.float32).reshape(m, n)
                ref = x.astype(npd).astype(np.float32) @ w.astype(npd).astype(np.float32).T
                record(name, prog, 10, out, ref)
            except Exception as e:  # a probe: report and go on
                print(f"{name:40s} FAILED: {' | '.join(str(e).split()) [:600]}", flush=True)
                results.append({"kernel": name, "error": str(e)[:2000]})
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
