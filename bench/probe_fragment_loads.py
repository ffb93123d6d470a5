"""What a subgroup-matrix fragment load from workgroup memory costs beside the product it feeds.

The f16 tile matmul's step is held by a rate, not by latency (docs/performance.md, "What limits
prompts"): its time grows with the bytes each product moves through workgroup memory. This probe
times the inner loop alone: each subgroup multiplies `tm` x `tn` f16 16x16x16 fragments into
f32 sums, `--reps` times, with the fragments loaded from workgroup memory every step ("loads")
or once before the loop ("registers": the tiles' raw rate), for several row strides of the
staged rows (in f16s; the tile kernels use 40) and both layouts of the right-hand fragment
(`true`: column-major, as the kernels load weight rows; `false`: row-major). The difference
between the two, a fragment, is what a load costs on the critical path.

    python bench/probe_fragment_loads.py --out loads.json
    python bench/probe_fragment_loads.py --tiles 2x4,4x4 --strides 32,40 --reps 2048
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from webgpu_llm.kernels.mma import MATRIX_HEAD
from webgpu_llm.runtime.gpu import open_gpu
from webgpu_llm.runtime.program import Kernel, Program

SUBGROUPS = 8  # subgroups a workgroup, as the 4x2x2x4 tiles


def kernel(tm: int, tn: int, stride: int, col_major: bool, loads: bool, reps: int) -> Kernel:
    """Each subgroup: tm x tn f32 sums of f16 16x16x16 products, reps steps; left fragments from
    rows 16 i.. of `xa`, right ones from rows 16 j.. of `wb` (each subgroup its own columns at
    the step's offset, so that no load can be hoisted), every step or once (`loads`)."""
    frag_rows = 16 * max(tm, tn)
    size = SUBGROUPS * frag_rows * stride
    ids = [(i, j) for i in range(tm) for j in range(tn)]
    decl = "\n".join(f"  var acc{i}{j} = subgroup_matrix_result<f32, 16, 16>();" for i, j in ids)

    def load(var: str, side: str, arr: str, r: int, at: str) -> str:
        kind = "left" if side == "a" else "right"
        major = "true" if side == "b" and col_major else "false"
        return (f"let {var} = subgroupMatrixLoad<subgroup_matrix_{kind}<f16, 16, 16>>(&{arr}, base + {16 * r}u * S + {at}, "
                f"{major}, S);")

    def loads_at(at: str) -> str:
        return "\n".join([f"    {load(f'a{i}', 'a', 'xa', i, at)}" for i in range(tm)]
                         + [f"    {load(f'b{j}', 'b', 'wb', j, at)}" for j in range(tn)])

    products = "\n".join(f"    acc{i}{j} = subgroupMatrixMultiplyAccumulate(a{i}, b{j}, acc{i}{j});" for i, j in ids)
    body = (f"  for (var r = 0u; r < {reps}u; r++) {{\n    let at = (r & 1u) * 16u;\n{loads_at('at')}\n{products}\n  }}"
            if loads else f"{loads_at('0u')}\n  for (var r = 0u; r < {reps}u; r++) {{\n{products}\n  }}")
    stores = "\n".join(f"  subgroupMatrixStore(&out, (wid.x * {SUBGROUPS}u + sg) * {256 * len(ids)}u + {256 * n}u, acc{i}{j}, false, 16u);"
                       for n, (i, j) in enumerate(ids))
    wgsl = f"""{MATRIX_HEAD}
@group(0) @binding(0) var<storage, read> src: array<f16>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
const S: u32 = {stride}u;
var<workgroup> xa: array<f16, {size}>;
var<workgroup> wb: array<f16, {size}>;
@compute @workgroup_size({32 * SUBGROUPS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32) {{
  for (var e = lid; e < {size}u; e += {32 * SUBGROUPS}u) {{
    xa[e] = src[e % 4096u];
    wb[e] = src[(e * 7u) % 4096u];
  }}
  workgroupBarrier();
  let base = sg * {frag_rows}u * S;
{decl}
{body}
{stores}
}}
"""
    name = f"fragment_loads_{tm}x{tn}_s{stride}_{'col' if col_major else 'row'}_{'loads' if loads else 'registers'}"
    return Kernel(name, "enable f16;\n" + wgsl, ("src", "out"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", default="2x2,2x4,4x4", help="tm x tn fragments a subgroup, comma-separated")
    ap.add_argument("--strides", default="32,40,48", help="row strides of the staged rows in f16s (multiples of 8)")
    ap.add_argument("--reps", type=int, default=1024, help="steps of the loop (default 1024)")
    ap.add_argument("--groups", type=int, default=132 * 4, help="workgroups (default 528: 4 an H100 multiprocessor)")
    ap.add_argument("--sms", type=int, default=132, help="the GPU's multiprocessors (default 132: H100, H200)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    try:
        tiles = [tuple(int(v) for v in t.split("x")) for t in a.tiles.split(",")]
        strides = [int(v) for v in a.strides.split(",")]
    except ValueError:
        raise SystemExit(f"--tiles {a.tiles!r} / --strides {a.strides!r}: e.g. --tiles 2x2,4x4 --strides 32,40") from None
    if any(len(t) != 2 or not 1 <= min(t) <= max(t) <= 4 for t in tiles) or any(s < 32 or s % 8 for s in strides):
        raise SystemExit("--tiles: tm x tn from 1 to 4; --strides: multiples of 8, at least 32 (two steps' 16 columns)")
    gpu = open_gpu("dawn")
    if not gpu.has_timestamps:
        raise SystemExit("this probe needs GPU timestamps (timestamp-query)")
    src = gpu.upload(np.random.default_rng(0).standard_normal(4096).astype(np.float16))
    rows: list[dict[str, Any]] = []
    print(f"{gpu.name}: {a.groups} workgroups of {SUBGROUPS} subgroups, {a.reps} steps", flush=True)
    for tm, tn in tiles:
        out = gpu.buffer(a.groups * SUBGROUPS * 256 * tm * tn * 4)
        for stride in strides:
            need = 2 * SUBGROUPS * 16 * max(tm, tn) * stride * 2  # (both staged arrays' f16s)
            if need > (room := gpu.limits["max-compute-workgroup-storage-size"]):
                print(f"{tm}x{tn} stride {stride}: skipped, its staging takes {need} bytes of workgroup memory "
                      f"and {gpu.name} allows {room}", flush=True)
                continue
            for col_major in (True, False):
                times = {}
                for loads in (False, True):
                    k = kernel(tm, tn, stride, col_major, loads, a.reps)
                    try:
                        prog = Program(gpu)
                        prog.add(k, {"src": src, "out": out}, (a.groups, 1, 1))
                        prog.run(1)
                        gpu.sync()
                        times[loads] = prog.time_gpu(1, reps=5)
                    except Exception as e:  # a probe: report and go on
                        print(f"{k.name}: FAILED {' '.join(str(e).split())[:300]}", flush=True)
                if len(times) < 2:
                    continue
                products = a.groups * SUBGROUPS * tm * tn * a.reps
                tflops = {w: 2.0 * 16 ** 3 * products / s / 1e12 for w, s in times.items()}
                # a load's share of a multiprocessor's time: the extra time over the loads each one ran
                per_sm = a.groups * SUBGROUPS * (tm + tn) * a.reps / a.sms
                per_load_ns = (times[True] - times[False]) / per_sm * 1e9
                r = {"tm": tm, "tn": tn, "stride": stride, "right": "col" if col_major else "row",
                     "registers_us": times[False] * 1e6, "loads_us": times[True] * 1e6,
                     "registers_tflops": tflops[False], "loads_tflops": tflops[True], "sm_ns_per_load": per_load_ns}
                rows.append(r)
                print(f"{tm}x{tn} stride {stride:3d} right {r['right']}: registers {tflops[False]:7.1f} TFLOP/s, "
                      f"loads {tflops[True]:7.1f} ({times[True] * 1e6:8.1f} us): {per_load_ns:.2f} ns of a multiprocessor a load", flush=True)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"adapter": gpu.name, "groups": a.groups, "reps": a.reps, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
