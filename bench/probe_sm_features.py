"""What Dawn's subgroup matrices (`chromium-experimental-subgroup-matrix`) offer on this GPU:
the configurations the adapter lists (an H200: int8 16×16×32 and 16×8×32), then for each int8
one a tile product checked exactly against numpy and the raw multiply-accumulate rate (one
subgroup per workgroup, 4096 chained products; an H200 reached 1.14 POPS for i8 16×16×32). Run
it first on a new GPU or driver before trusting the int8 (or future f16) tile paths; writes JSON
with --out.

    python bench/probe_sm_features.py --out probe.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from webgpu_llm.runtime.gpu import MMA_FEATURE, open_gpu, subgroup_matrix_configs
from webgpu_llm.runtime.program import Program


def kernel(comp: str, res: str, m: int, n: int, k: int, reps: int) -> str:
    return f"""enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read> a: array<{res}>;
@group(0) @binding(1) var<storage, read> b: array<{res}>;
@group(0) @binding(2) var<storage, read_write> c: array<{res}>;
@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wid: vec3<u32>) {{
  let A = subgroupMatrixLoad<subgroup_matrix_left<{comp}, {k}, {m}>>(&a, 0u, false, {k}u);
  let B = subgroupMatrixLoad<subgroup_matrix_right<{comp}, {n}, {k}>>(&b, 0u, true, {k}u);
  var C = subgroup_matrix_result<{res}, {n}, {m}>();
  for (var r = 0u; r < {reps}u; r++) {{
    C = subgroupMatrixMultiplyAccumulate(A, B, C);
  }}
  subgroupMatrixStore(&c, wid.x * {m * n}u, C, false, {n}u);
}}
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    gpu = open_gpu("dawn")  # (asks for the subgroup matrices where the adapter lists them)
    configs = subgroup_matrix_configs(gpu.adapter)
    print("device features with subgroup matrices:", MMA_FEATURE in gpu.features)
    results: list[dict] = [{"configs": configs}]
    rng = np.random.default_rng(0)
    for cfg in configs:
        comp, res, m, n, k = cfg["component_type"], cfg["result_component_type"], cfg["m"], cfg["n"], cfg["k"]
        if comp not in ("i8", "u8"):
            continue
        lo, hi = (-128, 128) if comp == "i8" else (0, 256)
        A = rng.integers(lo, hi, (m, k)).astype(np.int8 if comp == "i8" else np.uint8)
        W = rng.integers(lo, hi, (n, k)).astype(A.dtype)
        ref = A.astype(np.int64) @ W.astype(np.int64).T
        name = f"{comp}->{res} {m}x{n}x{k}"
        try:
            out = {}
            for reps, groups in ((1, 1), (4096, 132 * 32)):
                src = kernel(comp, res, m, n, k, reps)
                pipe = gpu.pipeline(src, name)
                ab, bb = gpu.upload(A.view(np.uint8)), gpu.upload(W.view(np.uint8))
                cb = gpu.buffer(groups * m * n * 4)
                prog = Program(gpu)
                prog.add_bound(name, pipe, gpu.bind_group(pipe, [ab, bb, cb], name), (groups, 1, 1))
                prog.run(1)
                got = gpu.read_array(cb, np.int32 if res == "i32" else np.uint32, m * n).reshape(m, n)
                out[reps] = (prog.time_gpu(1, reps=5), got)
            s, got = out[4096]
            ok1 = bool(np.array_equal(out[1][1].astype(np.int64), ref))
            okn = bool(np.array_equal(got.astype(np.int64), (ref * 4096) % 2**32 if res == "u32" else
                                      ((ref * 4096 + 2**31) % 2**32 - 2**31)))
            tops = 2.0 * m * n * k * 4096 * 132 * 32 / s / 1e12
            r = {"config": name, "exact_one": ok1, "exact_4096": okn, "us": s * 1e6, "tops": tops}
            print(f"{name:24s} one product exact: {ok1}, 4096: {okn}, {s * 1e6:8.1f} us, {tops:7.1f} TOPS", flush=True)
        except Exception as e:  # a probe: report and go on
            r = {"config": name, "error": " ".join(str(e).split())[:1500]}
            print(f"{name:24s} FAILED: {r['error'][:600]}", flush=True)
        results.append(r)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
