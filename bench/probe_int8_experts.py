#!/usr/bin/env python3
"""Where the int8 expert matmul goes wrong on real int8 tiles: the prompt's expert matmul of
kernels/mma.py (its rows the (token, slot) pairs the group kernel lists by expert) on the
adapter's int8 subgroup matrices beside the same kernel emulated (dot4I8Packed, which matches
numpy in the kernel tests), and beside the dense int8 kernel on each expert's rows alone (right
on real tiles). Prints which outputs differ by the entry's place in its tile (tokens), the
weight row's place (rows), the expert and the tile, and whether a wrong row is another's.

    python bench/probe_int8_experts.py                      # the kernel test's sizes (7 experts, 3 a token)
    python bench/probe_int8_experts.py --experts 128 --used 8 --tokens 512 --k 2048 --rows 768

Needs Dawn on a GPU with int8 subgroup matrices (`--emulate` runs both sides emulated: a check
of the probe itself, every difference zero). Exit status: 0, 1 where the adapter has no int8
tiles.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from webgpu_llm.kernels import moe  # noqa: E402
from webgpu_llm.kernels.common import pack_state  # noqa: E402
from webgpu_llm.kernels.formats import FORMATS  # noqa: E402
from webgpu_llm.kernels.linear import Experts, LinearSpec, Segment  # noqa: E402
from webgpu_llm.kernels.mma import (  # noqa: E402
    BM,
    BN,
    mma_matmul_grid,
    mma_matmul_kernel,
    quantize_grid,
    quantize_kernel,
    usable,
)
from webgpu_llm.models.presets import random_weight  # noqa: E402
from webgpu_llm.runtime.gpu import open_gpu  # noqa: E402
from webgpu_llm.runtime.program import Program  # noqa: E402


def _wrong_by(index: np.ndarray, wrong: np.ndarray, size: int) -> dict[int, float]:
    """The share of wrong outputs at each value of `index` (mod `size`) that has any."""
    at = index % size
    return {int(v): round(float(wrong[at == v].mean()), 3) for v in np.unique(at) if wrong[at == v].any()}


def probe(o: argparse.Namespace) -> dict[str, Any]:
    gpu = open_gpu("dawn")
    if not (usable(gpu) or o.emulate):
        raise SystemExit(f"error: {gpu.name} has no int8 subgroup matrices (try --emulate to check the probe)")
    rng = np.random.default_rng(o.seed)
    n, e_count, used, k, rows = o.tokens, o.experts, o.used, o.k, o.rows
    pairs = n * used
    ids = np.stack([rng.choice(e_count, used, replace=False) for _ in range(n)]).astype(np.uint32)
    route = np.zeros((pairs, 2), np.uint32)
    route[:, 0] = ids.ravel()
    route[:, 1] = np.full(pairs, 1.0 / used, np.float32).view(np.uint32)
    raw = random_weight(o.fmt, e_count * rows, k, rng, 0.2)
    w = gpu.upload(FORMATS[o.fmt].pack(raw, k))
    x = gpu.upload(rng.standard_normal((n, k)).astype(np.float32))
    st = gpu.upload(pack_state(n=n))
    units = {"xq": gpu.buffer(n * k), "xs": gpu.buffer(n * k // 4)}
    groups = gpu.buffer(moe.groups_words(e_count, pairs) * 4)
    spec = LinearSpec(k=k, segments=(Segment(o.fmt, rows),), experts=Experts(e_count, used, rows=pairs))
    prep = Program(gpu, "probe_prep")
    prep.add(moe.group_kernel(e_count, used, pairs), {"st": st, "route": gpu.upload(route), "groups": groups}, (1, 1, 1))
    prep.add(quantize_kernel(k), {"st": st, "x": x, **units}, quantize_grid(k)(n))
    prep.run(n)
    out = {}
    for name, emulate in (("real", o.emulate), ("emulated", True)):
        y = gpu.buffer(pairs * rows * 4)
        prog = Program(gpu, f"probe_{name}")
        prog.add(mma_matmul_kernel(spec, emulate), {"st": st, "w0": w, "y": y, "groups": groups, **units},
                 mma_matmul_grid(spec)(n))
        prog.run(n)
        out[name] = gpu.read_array(y, np.float32, pairs * rows).reshape(pairs, rows)
    g = gpu.read_array(groups, np.uint32, moe.groups_words(e_count, pairs))
    start, order = g[:e_count + 1], g[e_count + 1:e_count + 1 + pairs]
    entry_expert = np.repeat(np.arange(e_count), np.diff(start.astype(np.int64)))
    entry_place = np.arange(pairs) - start[entry_expert]  # the entry's place among its expert's
    # the dense int8 kernel on each expert's rows alone (all tokens), its rows picked per entry
    dense = np.zeros_like(out["emulated"])
    per = raw.reshape(e_count, rows, -1)  # (each expert's rows of block bytes)
    dspec = LinearSpec(k=k, segments=(Segment(o.fmt, rows),))
    for e in range(e_count):
        if not (entry_expert == e).any():
            continue
        y = gpu.buffer(n * rows * 4)
        prog = Program(gpu, f"probe_dense_{e}")
        prog.add(mma_matmul_kernel(dspec, o.emulate), {"st": st, "w0": gpu.upload(FORMATS[o.fmt].pack(per[e], k)),
                                                       "y": y, **units}, mma_matmul_grid(dspec)(n))
        prog.run(n)
        ye = gpu.read_array(y, np.float32, n * rows).reshape(n, rows)
        sel = entry_expert == e
        dense[sel] = ye[order[sel] // used]
    scale = float(np.abs(out["emulated"]).max()) or 1.0
    res: dict[str, Any] = {"adapter": gpu.name, "emulated both": bool(o.emulate), "pairs": pairs,
                           "emulated vs dense": float(np.abs(out["emulated"] - dense).max() / scale)}
    err = np.abs(out["real"] - out["emulated"]) / scale
    wrong = err > o.tol
    res["real vs emulated"] = float(err.max())
    res["wrong share"] = round(float(wrong.mean()), 4)
    if wrong.any():
        rows_wrong = wrong.any(1)
        res["wrong by token place in tile (entry mod BM)"] = _wrong_by(np.repeat(entry_place[:, None], rows, 1), wrong, BM)
        res["wrong by weight row in block (row mod BN)"] = _wrong_by(np.tile(np.arange(rows), (pairs, 1)), wrong, BN)
        res["wrong by expert"] = _wrong_by(np.repeat(entry_expert[:, None], rows, 1), wrong, e_count)
        res["wrong by token tile"] = _wrong_by(np.repeat((entry_place // BM)[:, None], rows, 1), wrong, 1 << 16)
        # a wrong row that is another entry's right one (the rows' order mixed up, not their values)
        emu = out["emulated"]
        moved = 0
        for i in np.flatnonzero(rows_wrong)[:64]:
            d = np.abs(emu - out["real"][i]).max(1) / scale
            moved += int(d.min() <= o.tol)
        res["wrong rows that are another entry's (of the first 64)"] = moved
        res["real all zero where wrong"] = bool((out["real"][wrong] == 0).all())
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--experts", type=int, default=7)
    ap.add_argument("--used", type=int, default=3, help="experts a token")
    ap.add_argument("--tokens", type=int, default=37)
    ap.add_argument("--k", type=int, default=96, help="inputs (a multiple of 32)")
    ap.add_argument("--rows", type=int, default=64, help="an expert's weight rows")
    ap.add_argument("--fmt", default="q4_0", choices=("q4_0", "q8_0"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-3, help="relative difference counted as wrong")
    ap.add_argument("--emulate", action="store_true", help="both sides emulated (checks the probe)")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    o = ap.parse_args()
    if o.k % 32 or min(o.experts, o.used, o.tokens, o.rows) < 1 or o.used > o.experts:
        print("error: --k a multiple of 32; --experts, --used (at most --experts), --tokens, --rows at least 1",
              file=sys.stderr)
        return 2
    res = probe(o)
    text = json.dumps(res, indent=1)
    if o.out:
        Path(o.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
