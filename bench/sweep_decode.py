"""Coordinate-descent sweep of the decode kernel shapes on a preset: for each matrix role the
mat-vec (workgroup size, threads per row pair, units in flight per thread), then the attention chunk, keeping whatever
lowers the GPU time of a whole decode step (timestamps around one pass).

    python bench/sweep_decode.py --preset qwen2.5-0.5b --dtype f16 --backend dawn --out sweep.json

With --prefill it sweeps the prompt matmul's tokens per thread per role and the K splits of
the O and down projections instead, on the GPU time of a 512-token prompt through the layers;
with --blocks the row blocks each mat-vec workgroup takes; with --int8 it compares float and
int8 activations for q8_0/q4_0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

from webgpu_llm.generation.engine import Engine
from webgpu_llm.generation.sampling import SamplingParams
from webgpu_llm.models.presets import preset_model
from webgpu_llm.models.transformer import ROLES, Transformer, Tuning
from webgpu_llm.runtime.gpu import open_gpu

SHAPES = [(wg, tpr, ilp) for wg in (64, 128, 256) for tpr in (8, 16, 32, 64, 128, 256) for ilp in (1, 2) if tpr <= wg]
CHUNKS = [32, 64, 128]


def descend(values: dict[str, Any], key: str, candidates: Any, measure: Any, best: float,
            tried: dict[str, float] | None = None, label: str = "") -> float:
    """One coordinate of the descent: try each candidate for values[key], keep the fastest;
    returns the best time so far."""
    for c in candidates:
        old = values[key]
        if c == old:
            continue
        values[key] = c
        t = measure()
        if tried is not None:
            tried[f"{key} {label}={c}"] = t * 1e6
        if t < best:
            best = t
        else:
            values[key] = old
    return best


class DecodeBench:
    """A preset's model set up for timing decode steps under different Tunings."""

    def __init__(self, gpu: Any, preset: str, dtype: str) -> None:
        cfg, tensors = preset_model(preset, dtype)
        self.tf = Transformer(gpu, cfg, tensors.get, ctx=160, batch=16)
        self.eng = Engine(self.tf)
        self.prompt = list(range(100, 116))

    def use(self, tuning: Tuning) -> None:
        self.tf.rebuild(tuning)
        self.eng._steps.clear()

    def step_gpu(self, tuning: Tuning | None = None) -> float:
        """GPU seconds of one decode step with 116 keys in the cache (under `tuning` if given)."""
        if tuning is not None:
            self.use(tuning)
        self.eng.prefill(self.prompt + [0] * 100, 0, SamplingParams(), 0)
        return self.eng.step_program(SamplingParams()).time_gpu(1, reps=15)

    def tok_s(self, n: int = 64) -> float:
        return n / self.eng.time_decode(self.prompt, n)


def sweep(gpu: Any, preset: str, dtype: str) -> dict[str, Any]:
    b = DecodeBench(gpu, preset, dtype)
    start = Tuning.default(gpu)
    int8 = start.int8 and dtype in ("q8_0", "q4_0")  # the shapes this weight type decodes with
    cur = {r: tuple(start.shape(r, int8).values()) for r in ROLES}
    attn = {"chunk": start.attn_chunk}

    def measure() -> float:
        return b.step_gpu(dataclasses.replace(start, mv=tuple((r, *cur[r]) for r in ROLES), mv_int8=(),
                                              attn_chunk=attn["chunk"]))

    best = measure()
    t0 = time.time()
    for role in ROLES:
        best = descend(cur, role, SHAPES, measure, best)
        print(f"{gpu.backend} {dtype} {role:8s} -> {cur[role]}  step {best * 1e6:.0f} us", file=sys.stderr, flush=True)
    best = descend(attn, "chunk", CHUNKS, measure, best)
    measure()
    per = {k["kernel"]: k["us"] for k in b.eng.step_program(SamplingParams()).profile_by_label(1)}
    tok_s = b.tok_s()
    return {"backend": gpu.backend, "dtype": dtype, "preset": preset, "tuning": {r: cur[r] for r in ROLES},
            "attn_chunk": attn["chunk"], "step_gpu_us": best * 1e6, "tg64_tok_s": tok_s, "sweep_s": time.time() - t0,
            "profile_us": per}


def sweep_prefill(gpu: Any, preset: str, dtype: str, n: int = 512) -> dict[str, Any]:
    cfg, tensors = preset_model(preset, dtype)
    tf = Transformer(gpu, cfg, tensors.get, ctx=n + 8, batch=n)
    base = tf.tuning
    cur = {r: base.tm(r) for r in ("qkv", "o", "gate_up", "down")}
    splits = {r: base.split(r) for r in ("o", "down")}

    def measure() -> float:
        tf.rebuild(dataclasses.replace(base, mm=tuple(cur.items()), splits=tuple(splits.items())))
        gpu.write(tf.st, SamplingParams().state(0, n, 0))
        return tf.prefill.time_gpu(n, reps=5)

    best = measure()
    tried = {"start": best * 1e6}
    for role in cur:
        best = descend(cur, role, (2, 4, 8), measure, best, tried, "tm")
        print(f"{gpu.backend} {dtype} prefill {role:8s} -> tm {cur[role]}  {best * 1e6:.0f} us", file=sys.stderr, flush=True)
    for role in splits:
        best = descend(splits, role, (1, 2, 3, 4), measure, best, tried, "splits")
        print(f"{gpu.backend} {dtype} prefill {role:8s} -> splits {splits[role]}  {best * 1e6:.0f} us", file=sys.stderr,
              flush=True)
    return {"backend": gpu.backend, "dtype": dtype, "preset": preset, "mm": cur, "splits": splits,
            "layers_us": best * 1e6, "layers_tok_s": n / best, "tried_us": tried}


def sweep_blocks(gpu: Any, preset: str, dtype: str) -> dict[str, Any]:
    """Row blocks per mat-vec workgroup, per role, from the default shapes (one prologue for
    more rows against fewer, longer-lived workgroups)."""
    b = DecodeBench(gpu, preset, dtype)
    base = Tuning.default(gpu)
    cur = {r: base.row_blocks(r) for r in ROLES}

    def measure() -> float:
        return b.step_gpu(dataclasses.replace(base, blocks=tuple(cur.items())))

    start = best = measure()
    tried = {"start": best * 1e6}
    for role in ROLES:
        best = descend(cur, role, (1, 2, 4, 8), measure, best, tried, "blocks")
        print(f"{gpu.backend} {dtype} {role:8s} -> blocks {cur[role]}  step {best * 1e6:.0f} us", file=sys.stderr,
              flush=True)
    measure()
    tok_s = b.tok_s()
    b.use(base)
    tok_s0 = b.tok_s()
    return {"backend": gpu.backend, "dtype": dtype, "preset": preset, "blocks": cur, "start_step_gpu_us": start * 1e6,
            "step_gpu_us": best * 1e6, "tg64_tok_s": tok_s, "tg64_tok_s_default": tok_s0, "tried_us": tried}


def int8_ab(gpu: Any, preset: str, dtype: str) -> dict[str, Any]:
    """Decode with float activations vs int8 activations (dot4I8Packed), same kernel shapes."""
    b = DecodeBench(gpu, preset, dtype)
    out: dict[str, Any] = {"backend": gpu.backend, "dtype": dtype, "preset": preset}
    base = Tuning.default(gpu)
    for int8 in (False, True, False, True):
        b.use(dataclasses.replace(base, int8=int8))
        b.tok_s()  # warm-up
        key = "int8" if int8 else "float"
        out[f"{key}_step_gpu_us"] = b.step_gpu() * 1e6
        out[f"{key}_tg64_tok_s"] = b.tok_s()
    print(f"{gpu.backend} {preset} {dtype}: float {out['float_step_gpu_us']:.0f} us {out['float_tg64_tok_s']:.0f} tok/s"
          f" | int8 {out['int8_step_gpu_us']:.0f} us {out['int8_tg64_tok_s']:.0f} tok/s", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="qwen2.5-0.5b")
    ap.add_argument("--dtype", default="f16")
    ap.add_argument("--backend", default="dawn")
    ap.add_argument("--out", default=None)
    ap.add_argument("--prefill", action="store_true", help="sweep the prompt matmul instead")
    ap.add_argument("--int8", action="store_true", help="compare float and int8 activations instead")
    ap.add_argument("--blocks", action="store_true", help="sweep row blocks per mat-vec workgroup instead")
    a = ap.parse_args()
    results = []
    for backend in a.backend.split(","):
        gpu = open_gpu(backend)
        for dtype in a.dtype.split(","):
            fn = int8_ab if a.int8 else sweep_prefill if a.prefill else sweep_blocks if a.blocks else sweep
            row = fn(gpu, a.preset, dtype)
            results.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
