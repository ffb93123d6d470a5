"""Probe a grid-wide barrier inside one dispatch against a dispatch boundary.

Decode is latency-bound: each of a layer's 5 dependent dispatches costs a drain and refill of
the GPU. A persistent kernel (as many workgroups as fit at once, looping over the work) that
separates phases with a barrier built from storage atomics would replace those boundaries, if
the barrier is cheaper and if writes before it are visible after it. WebGPU guarantees
neither forward progress across workgroups nor cross-workgroup ordering without atomics, so
this measures both, with a spin limit so that a barrier that cannot complete (workgroups
not all resident) gives up and is reported instead of hanging the GPU.

For G workgroups of 256 threads and P phases it reports: GPU µs per phase for P dispatches of
a trivial kernel in one pass, and for one dispatch with P grid barriers; and the number of
stale reads (a workgroup reading, after a barrier, what another wrote before it) with plain
and with atomic loads.

    python bench/probe_grid_barrier.py --backend dawn,wgpu --out probe.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from webgpu_llm.runtime.gpu import open_gpu
from webgpu_llm.runtime.program import Kernel, Program

WG = 256
SPIN_CAP = 1 << 20


def trivial_kernel() -> str:
    return f"""
@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let i = wid.x * {WG}u + lid;
  data[i] = data[i] + 1u;
}}"""


def reset_kernel() -> str:
    return """
@group(0) @binding(0) var<storage, read_write> sync: array<atomic<u32>>;
@compute @workgroup_size(1)
fn main() { atomicStore(&sync[0], 0u); atomicStore(&sync[1], 0u); atomicStore(&sync[2], 0u); }"""


def barrier_kernel(groups: int, phases: int, atomic_data: bool) -> str:
    """Each phase: every thread writes a value into this phase's half, grid barrier, then reads
    what the next workgroup wrote (the same addresses every other phase, so a stale cache line
    would show) and counts mismatches in sync[2]; sync[1] counts barriers that gave up."""
    n = groups * WG
    dt = "atomic<u32>" if atomic_data else "u32"
    store = "atomicStore(&data[i], v);" if atomic_data else "data[i] = v;"
    load = "atomicLoad(&data[j])" if atomic_data else "data[j]"
    return f"""
@group(0) @binding(0) var<storage, read_write> sync: array<atomic<u32>>;
@group(0) @binding(1) var<storage, read_write> data: array<{dt}>;
@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let src = (wid.x + 1u) % {groups}u;
  for (var p = 0u; p < {phases}u; p++) {{
    let half = (p & 1u) * {n}u;
    let i = half + wid.x * {WG}u + lid;
    let v = p * 2654435761u + i;
    {store}
    storageBarrier();
    workgroupBarrier();
    if (lid == 0u) {{
      atomicAdd(&sync[0], 1u);
      let target_count = (p + 1u) * {groups}u;
      var spins = 0u;
      loop {{
        if (atomicLoad(&sync[0]) >= target_count) {{ break; }}
        spins++;
        if (spins > {SPIN_CAP}u) {{ atomicAdd(&sync[1], 1u); break; }}
      }}
    }}
    workgroupBarrier();
    storageBarrier();
    let j = half + src * {WG}u + lid;
    let got = {load};
    if (got != p * 2654435761u + j) {{ atomicAdd(&sync[2], 1u); }}
  }}
}}"""


def probe(backend: str, groups_list: list[int], phases: int, reps: int) -> list[dict]:
    gpu = open_gpu(backend)
    print(f"# {gpu.name}", flush=True)
    out = []
    for groups in groups_list:
        n = groups * WG
        data = gpu.buffer(2 * n * 4, "data")
        sync = gpu.buffer(16, "sync")
        triv = Program(gpu, "trivial")
        k = Kernel("trivial", trivial_kernel())
        for _ in range(phases):
            triv.add(k, [data], (groups, 1, 1))
        t_disp = triv.time_gpu(1, reps=reps) / phases
        row: dict = {"backend": backend, "groups": groups, "threads": n, "phases": phases,
                     "dispatch_us": t_disp * 1e6}
        for atomic_data in (False, True):
            prog = Program(gpu, "barrier")
            prog.add(Kernel("reset", reset_kernel()), [sync], (1, 1, 1))
            prog.add(Kernel("barrier", barrier_kernel(groups, phases, atomic_data)), [sync, data], (groups, 1, 1))
            stale = gave_up = 0
            for _ in range(reps):  # correctness first: a barrier that gives up is slow
                prog.run()
                s = gpu.read_array(sync, np.uint32, 3)
                gave_up += int(s[1])
                stale += int(s[2])
                if gave_up:
                    break
            t = float("nan") if gave_up else prog.time_gpu(1, reps=reps)
            key = "atomic" if atomic_data else "plain"
            row[f"barrier_{key}_us"] = t / phases * 1e6
            row[f"gave_up_{key}"] = gave_up
            row[f"stale_{key}"] = stale
        out.append(row)
        print(f"{backend:5s} G={groups:5d}  dispatch {row['dispatch_us']:6.2f} us  "
              f"barrier plain {row['barrier_plain_us']:6.2f} us (stale {row['stale_plain']}, gave up {row['gave_up_plain']})  "
              f"atomic {row['barrier_atomic_us']:6.2f} us (stale {row['stale_atomic']}, gave up {row['gave_up_atomic']})",
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="dawn,wgpu")
    ap.add_argument("--groups", default="132,264,528,1056")
    ap.add_argument("--phases", type=int, default=200)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []
    for b in a.backend.split(","):
        rows += probe(b, [int(g) for g in a.groups.split(",")], a.phases, a.reps)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
