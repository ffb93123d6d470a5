"""The mat-vec alone, per weight type: every (workgroup size, threads per row pair, units in
flight) shape on each of a preset's decode matrix shapes, timed as a pass of 20 back-to-back
dispatches (GPU timestamps); prints each matrix's best shape and every shape's GB/s. Quicker
than bench/sweep_decode.py, which times the whole step, and useful to see a new kernel's or
format's shape landscape before sweeping the step; note it builds the plain mat-vec (no spread
reads, no int8 activations, no early weights), not the variants the engine picks on a GPU.
--dtype and --backend take comma lists.

    python bench/tune_matvec.py --preset qwen2.5-0.5b --dtype f16,q8_0,q4_0 --backend dawn
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from webgpu_llm.kernels.common import pack_state
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.kernels.linear import LinearSpec, Segment, matvec_grid, matvec_kernel
from webgpu_llm.models.presets import PRESETS, random_weight
from webgpu_llm.runtime.gpu import open_gpu
from webgpu_llm.runtime.program import Program

SHAPES = [(wg, tpr, ilp) for wg in (128, 256) for tpr in (8, 16, 32, 64) for ilp in (1, 2, 4)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="qwen2.5-0.5b")
    ap.add_argument("--dtype", default="f16")
    ap.add_argument("--backend", default="wgpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    p = PRESETS[a.preset]
    h, f, v = p["hidden"], p["intermediate"], p["vocab"]
    qkv = p["n_heads"] * p["head_dim"] + 2 * p["n_kv_heads"] * p["head_dim"]
    mats = {"qkv": (qkv, h), "o": (h, p["n_heads"] * p["head_dim"]), "gate_up": (2 * f, h), "down": (h, f),
            "lm_head": (v, h)}
    rows_out = []
    for backend in a.backend.split(","):
        gpu = open_gpu(backend)
        st = gpu.upload(pack_state(n=1))
        for dtype in a.dtype.split(","):
            for name, (rows, k) in mats.items():
                raw = random_weight(dtype, min(rows, 256), k, np.random.default_rng(0))
                raw = np.tile(raw, (-(-rows // raw.shape[0]), 1))[:rows]
                wb = gpu.upload(FORMATS[dtype].pack(raw, k))
                xb, yb = gpu.upload(np.ones(k, np.float32)), gpu.buffer(rows * 4)
                nbytes = FORMATS[dtype].nbytes(rows, k)
                best = None
                for wg, tpr, ilp in SHAPES:
                    spec = LinearSpec(k=k, segments=(Segment(dtype, rows),))
                    prog = Program(gpu)
                    kern = matvec_kernel(spec, wg=wg, tpr=tpr, subgroups=gpu.subgroups_wgsl(), ilp=ilp)
                    for _ in range(20):
                        prog.add(kern, {"st": st, "w0": wb, "x": xb, "y": yb}, matvec_grid(spec, wg, tpr))
                    s = prog.time_gpu(1, reps=5) / 20
                    r = {"backend": backend, "dtype": dtype, "matrix": name, "rows": rows, "k": k, "wg": wg,
                         "tpr": tpr, "ilp": ilp, "us": s * 1e6, "gb_s": nbytes / s / 1e9}
                    rows_out.append(r)
                    if best is None or r["us"] < best["us"]:
                        best = r
                print(f"{backend:5s} {dtype:5s} {name:8s} {rows:6d}x{k:<5d} best wg={best['wg']:3d} "
                      f"tpr={best['tpr']:2d} ilp={best['ilp']} {best['us']:7.1f} us {best['gb_s']:6.0f} GB/s | " +
                      " ".join(f"{r['wg']}/{r['tpr']}/{r['ilp']}:{r['gb_s']:.0f}" for r in rows_out
                               if r['matrix'] == name and r['dtype'] == dtype and r['backend'] == backend), flush=True)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(rows_out, fh, indent=1)


if __name__ == "__main__":
    main()
