"""Do consecutive dispatches of one compute pass run at once when neither touches what the other
writes? A batched decode step is a chain of ~240 dependent dispatches that each leave most of
the GPU idle (~5-7 µs a dispatch on an H100, "Many streams" in docs/performance.md). Dawn's
Vulkan backend emits a pipeline barrier only before a dispatch that uses a buffer an earlier one
wrote (or writes one an earlier one used), so a chain against independent dispatches says how
much of a dispatch's time is that barrier's drain. Each such barrier waits for all earlier
compute work, so two chains interleaved are expected to overlap only in their first pair.

Times, in one pass each (GPU timestamps; wall clock where the adapter has none), dispatches of a
small kernel (`--groups` workgroups of 64 threads, each a chain of `--iters` multiply-adds):

- chain: N dispatches, each reading what the one before wrote;
- two chains interleaved: 2N dispatches, chains X and Y on buffers of their own, X1 Y1 X2 Y2 ...;
- independent: N dispatches reading one buffer, each writing its own;
- one dispatch of N x the workgroups (the same work with no dispatch boundaries).

"interleaved / chain" near 1 means the second chain's dispatches ran beside the first's (near
2: one after another); "independent / chain" near 0 that unordered dispatches overlap freely.

    python bench/probe_dispatch_overlap.py --backend dawn --groups 16 --iters 2000 --n 200 --out overlap.json
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from webgpu_llm.runtime.gpu import Gpu, open_gpu
from webgpu_llm.runtime.program import Kernel, Program

WG = 64


def work_kernel(iters: int) -> Kernel:
    wgsl = f"""@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size({WG})
fn main(@builtin(global_invocation_id) g: vec3<u32>) {{
  var v = src[g.x];
  for (var i = 0u; i < {iters}u; i++) {{ v = fma(v, 0.999999, 0.5); }}
  dst[g.x] = v;
}}
"""
    return Kernel(f"overlap_work_{iters}", wgsl, ("src", "dst"))


def programs(gpu: Gpu, kernel: Kernel, groups: int, n: int) -> dict[str, Program]:
    size = groups * WG * 4
    start = np.linspace(0.0, 1.0, groups * WG * n, dtype=np.float32)
    buf = lambda: gpu.upload(start[: groups * WG])  # noqa: E731
    grid = (groups, 1, 1)
    chain, inter, indep, one = (Program(gpu, name) for name in ("chain", "interleaved", "independent", "one"))
    x, y = [buf(), buf()], [buf(), buf()]
    for i in range(n):
        chain.add(kernel, {"src": x[i % 2], "dst": x[(i + 1) % 2]}, grid)
        inter.add(kernel, {"src": x[i % 2], "dst": x[(i + 1) % 2]}, grid)
        inter.add(kernel, {"src": y[i % 2], "dst": y[(i + 1) % 2]}, grid)
    shared = buf()
    for _ in range(n):
        indep.add(kernel, {"src": shared, "dst": gpu.buffer(size, "overlap dst")}, grid)
    one.add(kernel, {"src": gpu.upload(start), "dst": gpu.buffer(size * n, "overlap dst")}, (groups * n, 1, 1))
    return {"chain": chain, "interleaved": inter, "independent": indep, "one": one}


def seconds(gpu: Gpu, prog: Program, reps: int) -> float:
    """One replay's GPU time (median of reps), after a warm-up of ~0.2 s."""
    end = time.perf_counter() + 0.2
    while time.perf_counter() < end:
        prog.run(1)
        gpu.sync()
    if gpu.has_timestamps:
        return prog.time_gpu(1, reps)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        prog.run(1)
        gpu.sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="dawn", choices=["dawn", "wgpu"])
    ap.add_argument("--groups", default="16", help="workgroups a dispatch, comma-separated (default 16)")
    ap.add_argument("--iters", default="0,2000", help="multiply-adds a thread, comma-separated (default 0,2000)")
    ap.add_argument("--n", type=int, default=200, help="dispatches a chain (default 200)")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.n < 2 or a.reps < 1:
        raise SystemExit("--n must be at least 2 and --reps at least 1")
    gpu = open_gpu(a.backend)
    print(f"{gpu.name}: {'GPU timestamps' if gpu.has_timestamps else 'wall clock'}", flush=True)
    rows: list[dict[str, Any]] = []
    for groups in (int(v) for v in a.groups.split(",")):
        for iters in (int(v) for v in a.iters.split(",")):
            progs = programs(gpu, work_kernel(iters), groups, a.n)
            t = {name: seconds(gpu, p, a.reps) for name, p in progs.items()}
            row = {"groups": groups, "iters": iters, "n": a.n,
                   **{f"{k}_us": v * 1e6 for k, v in t.items()},
                   "chain_us_per_dispatch": t["chain"] / a.n * 1e6,
                   "interleaved_over_chain": t["interleaved"] / t["chain"],
                   "independent_over_chain": t["independent"] / t["chain"]}
            rows.append(row)
            print(f"groups {groups:4d} iters {iters:6d}: chain {row['chain_us_per_dispatch']:7.2f} us a dispatch; "
                  f"interleaved/chain {row['interleaved_over_chain']:.2f}, independent/chain "
                  f"{row['independent_over_chain']:.2f}, one dispatch {t['one'] * 1e6:8.1f} us "
                  f"(chain {t['chain'] * 1e6:8.1f})", flush=True)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"adapter": gpu.name, "backend": a.backend, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
