"""Where a prompt matmul on the matrix tiles spends its time: one prompt shape through the tile
kernel of kernels/mma.py, each variant first checked against numpy, then timed beside the SIMT
tiled matmul and beside copies of itself with parts cut out of its WGSL.

- `--path int8`: the int8 tiles (x quantized first) and their cuts (the per-unit scaling, the
  tile products, both; extra workgroup memory for less occupancy), optionally with K split
  (`--splits`). It told which parts sit on that kernel's critical path (gate/up 217 µs against
  the SIMT's 369 on an H200).
- `--path f16` (the default prompt path on GPUs with f16 tiles): the f16 tiles in each workgroup
  shape of `--shapes`, then the first shape's cuts: without the tile products (loads and
  staging alone), without the global loads (staging of constants, products), without
  staging and products (the loop's loads and barriers alone); each shape also with x as rows
  of f16s (`LinearSpec.x_f16`: half the bytes staged and held in registers). The 1.5B's
  gate/up runs near 79 TFLOP/s of the ~500 the tiles allow; the cuts say which part holds it.
  With `--direct`, f16 weights also on the direct tiles (kernels/direct_tiles.py: weight
  fragments loaded from the weight buffer) in each of those shapes; `--splits` splits K for
  both (a batched step's few rows: `--tokens 32 --splits 1,8`).

Needs Dawn on a GPU with subgroup matrices; optional Dawn toggles with `--toggles`; JSON with --out.

    python bench/probe_mma_matmul.py --rows 9728 --k 896 --tokens 512 --fmt q8_0 --epilogue silu_mul --path int8
    python bench/probe_mma_matmul.py --rows 17920 --k 1536 --tokens 512 --fmt f16 --epilogue silu_mul \\
        --shapes "2,2,4,4,2;4,2,2,4,2;2,4,4,2,2;2,2,2,2,2;2,2,4,4,1"
    python bench/probe_mma_matmul.py --rows 17920 --k 1536 --tokens 32 --fmt f16 --epilogue silu_mul --splits 1,4 \\
        --shapes "1,4,1,2" --direct "2,2,4,1,256,4;2,2,4,1,256,8;2,2,2,2,256,4" --cuts none
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time as time_mod
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from webgpu_llm.kernels.common import pack_state
from webgpu_llm.kernels.direct_tiles import DirectShape, direct_matmul_grid, direct_matmul_kernel
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.kernels.linear import LinearSpec, Segment, matmul_grid, matmul_kernel
from webgpu_llm.kernels.mma import (
    TileShape,
    f16_matmul_grid,
    f16_matmul_kernel,
    mma_matmul_grid,
    mma_matmul_kernel,
    quantize_grid,
    quantize_kernel,
)
from webgpu_llm.models.presets import random_weight
from webgpu_llm.runtime.gpu import open_gpu
from webgpu_llm.runtime.program import Kernel, Program

# TileShape's switches, each a flag of --shapes
FLAGS = tuple(f.name for f in fields(TileShape) if f.type in (bool, "bool"))


def parse_shape(text: str) -> TileShape:
    """"sm,sn,tm,tn[,depth[,ku]][,flag...]" as a TileShape (the f16 tiles' straight loads where
    depth is 2); a flag names a boolean field to switch on (FLAGS)."""
    parts = [v.strip() for v in text.split(",")]
    nums = [int(v) for v in parts if v.isdigit()]
    flags = [v for v in parts if not v.isdigit()]
    if not 4 <= len(nums) <= 6 or any(f not in FLAGS for f in flags):
        raise SystemExit(f"--shapes: {text!r} is not sm,sn,tm,tn[,depth[,ku]][,flag...] with flags of {', '.join(FLAGS)}")
    shape = TileShape(*nums[:4], depth=nums[4] if len(nums) > 4 else 1, ku=nums[5] if len(nums) > 5 else 1,
                      **{f: True for f in flags})
    try:
        shape.check()
    except ValueError as e:
        raise SystemExit(f"--shapes: {e}") from None
    return shape


def cut(src: str, name: str, pattern: str, repl: str) -> str:
    """`src` with every match of `pattern` replaced; a cut that matches nothing is an error (the
    kernel's WGSL changed under the probe)."""
    out, n = re.subn(pattern, repl, src, flags=re.M)
    if n == 0:
        raise ValueError(f"cut {name!r}: no match for {pattern!r}")
    return out


def f16_cuts(wgsl: str, raw: bool, x_f16: bool) -> dict[str, str]:
    """The f16 tile kernel without parts of its work. Removing a part also lets the compiler drop
    what only fed it (without the products, the fragment loads; without the staging stores,
    the global loads). `raw`: f16 weights (loaded as words by raw_row), whose loads can be
    replaced by values of the step; `x_f16`: x as words of f16 pairs."""
    products = r"^\s*acc\w+ = subgroupMatrixMultiplyAccumulate\(.*$"
    no_staging = cut(wgsl, "staging stores", r"^.*[xw]h\[o\] = .*$", "")
    out = {"no tile products (loads, staging)": cut(wgsl, "products", products, "")}
    if raw:  # the loads' values made of the step's indices (still stored, so still computed)
        consts = cut(wgsl, "x loads", r"x\[xi\]", "vec4<u32>(xi & 7u)" if x_f16 else "vec4<f32>(f32(xi & 7u))")
        out["no global loads (staging, products)"] = cut(
            consts, "w loads", r"raw_row\(r, (\w+)\)",
            r"array<vec4<u32>, 4>(vec4<u32>(\1), vec4<u32>(r), vec4<u32>(\1 + r), vec4<u32>(r))")
    out["no staging stores (products)"] = no_staging
    out["no staging nor products (loop, barriers)"] = cut(no_staging, "products", products, "")
    return out


def int8_cuts(wgsl: str) -> dict[str, str]:
    """The int8 tile kernel without its scaling, its products, both, and with extra workgroup
    memory it touches but does not need (less occupancy)."""
    drop_scaling = lambda s: "\n".join(ln for ln in s.split("\n") if "acc[" not in ln or "bitcast" in ln)  # noqa: E731
    no_products = wgsl.replace("    tile_products(sgid, lane);", "")
    out = {"no scaling": drop_scaling(wgsl), "no tile products": no_products, "neither": drop_scaling(no_products)}
    for kb in (8, 20):
        pad = f"var<workgroup> pad: array<i32, {kb * 256}>;\n"
        out[f"+{kb} KB workgroup memory"] = (wgsl.replace("var<private> split: u32;", pad + "var<private> split: u32;")
                                             .replace("  split = wid.z;", "  pad[lid] = i32(lid);\n  workgroupBarrier();\n"
                                                      "  split = select(wid.z, 99u, pad[(lid + 7u) % 128u] < 0);"))
    return out


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from reference import dequantize, int8_rounded  # the tests' numpy references

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=9728, help="weight rows (gate/up: both halves)")
    ap.add_argument("--k", type=int, default=896)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--fmt", default="q8_0")
    ap.add_argument("--epilogue", default="silu_mul")
    ap.add_argument("--path", default="f16", choices=["f16", "int8"], help="which tiles (default: f16)")
    ap.add_argument("--shapes", default="2,2,4,4,2;2,2,2,2,2",
                    help=f"f16 path: workgroup shapes sm,sn,tm,tn[,depth[,ku]][,flag...] (flags: {', '.join(FLAGS)}), "
                         "';'-separated; the first one's WGSL is cut")
    ap.add_argument("--splits", default="1", help="comma list of K splits to time (> 1: epilogue partial)")
    ap.add_argument("--direct", default="",
                    help="f16 path, f16 weights: direct tile shapes tm,tn,sn,sk[,kc[,ahead]], ';'-separated, timed too")
    ap.add_argument("--cuts", default="",
                    help="f16 path: which cuts of the first shape to time, comma-separated substrings of their names "
                         "(default: all; 'none': none); one a process keeps a cut that crashes the driver from ending the rest")
    ap.add_argument("--emulate", action="store_true",
                    help="f16 path: the tile products without matrix units (to check the probe on a CPU adapter; no cuts)")
    ap.add_argument("--toggles", default="", help="comma list of Dawn toggles to enable as well")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.toggles:  # before the instance exists (open_gpu's own setting is then ignored)
        from wgpudawn.backends.dawn import extras

        extras.set_instance_extras(enable_toggles=["allow_unsafe_apis", "skip_validation", *a.toggles.split(",")],
                                   disable_toggles=["timestamp_quantization"])
    shapes = [parse_shape(s) for s in a.shapes.split(";")] if a.path == "f16" else []
    gpu = open_gpu("dawn")
    rng = np.random.default_rng(0)
    raw = random_weight(a.fmt, a.rows, a.k, rng)
    wb = gpu.upload(FORMATS[a.fmt].pack(raw, a.k))
    xh = rng.standard_normal((a.tokens, a.k)).astype(np.float32)
    x = gpu.upload(xh)
    x16 = gpu.upload(xh.astype(np.float16))
    splits = [int(v) for v in a.splits.split(",")]
    y = gpu.buffer(a.tokens * a.rows * 4 * max(splits))
    nu = a.k // 32
    xq, xs = gpu.buffer(a.tokens * nu * 32), gpu.buffer(a.tokens * nu * 8)
    st = gpu.upload(pack_state(n=a.tokens))
    bufs = {"st": st, "w0": wb, "x": x, "xq": xq, "xs": xs, "y": y}
    spec = LinearSpec(k=a.k, segments=(Segment(a.fmt, a.rows),), epilogue=a.epilogue)
    plain = LinearSpec(k=a.k, segments=(Segment(a.fmt, a.rows),))
    flop = 2.0 * a.tokens * a.rows * a.k
    w = dequantize(a.fmt, raw, a.k).astype(np.float64)
    rows: list[dict[str, Any]] = []

    def bind(kernel: Kernel, f16_x: bool) -> dict[str, Any]:
        return {n: b for n, b in {**bufs, **({"x": x16} if f16_x else {})}.items() if n in kernel.bindings}

    def time(name: str, kernel: Kernel, grid: tuple[int, int, int], f16_x: bool = False) -> None:
        prog = Program(gpu)
        for _ in range(10):
            prog.add(kernel, bind(kernel, f16_x), grid)
        # ~0.3 s of the kernel first: after a check's read-back and numpy the GPU has idled, and
        # a handful of timed replays then ran up to 4x slow (the H200's clocks, or the pipeline's
        # first runs)
        end = time_mod.perf_counter() + 0.3
        while time_mod.perf_counter() < end:  # (each replay waited on: run() only submits)
            prog.run(1)
            gpu.sync()
        s = prog.time_gpu(1, reps=10) / 10
        rows.append({"kernel": name, "us": s * 1e6, "tflops": flop / s / 1e12})
        print(f"{name:48s} {s * 1e6:9.1f} us {flop / s / 1e12:7.2f} TFLOP/s", flush=True)

    def check(name: str, kernel: Kernel, grid: tuple[int, int, int], refs: dict[str, np.ndarray],
              f16_x: bool = False) -> None:
        """The kernel's y (no epilogue) against numpy at this size."""
        prog = Program(gpu)
        prog.add(kernel, bind(kernel, f16_x), grid)
        prog.run(1)
        got = gpu.read_array(y, np.float32, a.tokens * a.rows).reshape(a.tokens, a.rows)
        for what, ref in refs.items():
            err = float(np.abs(got - ref).max() / np.abs(ref).max())
            rows.append({"kernel": f"{name}: check against numpy, {what}", "rel_err": err})
            print(f"{name} against numpy ({what}): max rel err {err:.2e}", flush=True)

    def time_cuts(base: str, bindings: Any, cuts: dict[str, str], grid: tuple[int, int, int], f16_x: bool = False) -> None:
        for name, src in cuts.items():
            try:
                time(f"{base}, {name}", Kernel(name, src, bindings), grid, f16_x)
            except Exception as e:  # a probe: report and go on
                print(f"{base}, {name:40s} FAILED {' '.join(str(e).split())[:300]}")

    for tm in (4, 8):
        time(f"simt tm={tm}", matmul_kernel(spec, tm), matmul_grid(spec, tm)(a.tokens))
    if a.path == "int8":
        time("quantize x", quantize_kernel(a.k), quantize_grid(a.k)(a.tokens))  # (also x's units for the check)
        check("int8 tiles", mma_matmul_kernel(plain), mma_matmul_grid(plain)(a.tokens),
              {"int8-rounded x": int8_rounded(xh) @ w.T, "float x": xh @ w.T})
        mma = mma_matmul_kernel(spec)
        time("int8 tiles", mma, mma_matmul_grid(spec)(a.tokens))
        for sp in splits:
            if sp > 1:
                ss = LinearSpec(k=a.k, segments=(Segment(a.fmt, a.rows),), epilogue="partial", splits=sp)
                time(f"int8 tiles, {sp} K splits", mma_matmul_kernel(ss), mma_matmul_grid(ss)(a.tokens))
                time(f"simt tm=4, {sp} K splits", matmul_kernel(ss, 4), matmul_grid(ss, 4)(a.tokens))
        time_cuts("int8 tiles", mma.bindings, int8_cuts(mma.wgsl), mma_matmul_grid(spec)(a.tokens))
    else:
        f16 = lambda v: v.astype(np.float16).astype(np.float64)  # noqa: E731  (as the tiles see them)
        ref = {"f16-rounded x and weights": f16(xh) @ f16(w).T}
        def split(sp: LinearSpec, n: int) -> LinearSpec:
            return sp if n == 1 else replace(sp, epilogue="partial", splits=n)

        for shape in shapes:
            for f16_x in (False, True):
                flags = "".join(f" {f}" for f in FLAGS if f != "straight" and getattr(shape, f))  # (depth 2 implies straight)
                name = (f"f16 tiles {shape.sm}x{shape.sn}x{shape.tm}x{shape.tn} depth {shape.depth} ku {shape.ku}{flags}"
                        f"{', x f16' if f16_x else ''}")
                p, s = replace(plain, x_f16=f16_x), replace(spec, x_f16=f16_x)
                try:
                    check(name, f16_matmul_kernel(p, shape, a.emulate), f16_matmul_grid(p, shape)(a.tokens), ref, f16_x)
                    for n in splits:
                        ks = split(s, n)
                        time(name + (f", {n} K splits" if n > 1 else ""), f16_matmul_kernel(ks, shape, a.emulate),
                             f16_matmul_grid(ks, shape)(a.tokens), f16_x)
                except Exception as e:  # (a shape past the device's limits): report and go on
                    print(f"{name:48s} FAILED {' '.join(str(e).split())[:300]}", flush=True)
        for text in filter(None, a.direct.split(";")):
            shape = DirectShape(*(int(v) for v in text.split(",")))
            name = f"direct tiles {text}"
            try:
                check(name, direct_matmul_kernel(plain, shape, a.emulate), direct_matmul_grid(plain, shape)(a.tokens), ref)
                for n in splits:
                    ks = split(spec, n)
                    time(name + (f", {n} K splits" if n > 1 else ""), direct_matmul_kernel(ks, shape, a.emulate),
                         direct_matmul_grid(ks, shape)(a.tokens))
            except Exception as e:  # (not f16 weights, or past the device's limits): report and go on
                print(f"{name:48s} FAILED {' '.join(str(e).split())[:300]}", flush=True)
        if a.emulate:
            return write(a, rows)
        xs = replace(spec, x_f16=True)  # (the engine's default on GPUs with f16 tiles)
        k0 = f16_matmul_kernel(xs, shapes[0])
        cuts = f16_cuts(k0.wgsl, raw=a.fmt == "f16", x_f16=True)
        if a.cuts:
            cuts = {n: c for n, c in cuts.items() if any(w in n for w in a.cuts.split(","))}
        time_cuts(f"f16 tiles {shapes[0].sm}x{shapes[0].sn}x{shapes[0].tm}x{shapes[0].tn}, x f16", k0.bindings, cuts,
                  f16_matmul_grid(xs, shapes[0])(a.tokens), True)
    write(a, rows)


def write(a: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"args": vars(a), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
