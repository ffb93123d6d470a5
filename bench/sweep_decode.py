"""Coordinate-descent sweep of the engine's decode kernel shapes on a preset, on the GPU time of
a whole decode step (timestamps around its one pass): for each matrix role the mat-vec's
(workgroup size, threads per row pair, units in flight per thread), then the attention chunk,
keeping whatever lowers the step. `--prefill` sweeps the prompt instead (the matmul's tokens
per thread per role, the K splits of O and down) on a 512-token prompt's GPU time; `--blocks`
the row blocks each mat-vec workgroup takes; `--ab FIELD` (or `--int8` for `--ab int8`)
compares a Tuning switch off and on (or two values: `early=1,2`); `--with` turns switches on
(or sets fields: `persist=264`) in the Tuning every mode starts from. The engine's measured default shapes came from this sweep; rerun it for a new GPU,
weight format or kernel change (docs/performance.md).

    python bench/sweep_decode.py --preset qwen2.5-0.5b --dtype f16 --backend dawn --out sweep.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

from webgpu_llm.engine import Session, Settings, Tuning, default_tuning
from webgpu_llm.engine.settings import PERSIST_WG, ROLES
from webgpu_llm.kernels.formats import INT8_FORMATS, SPREAD_FORMATS
from webgpu_llm.models.presets import PRESETS, preset_model
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

    def __init__(self, gpu: Any, preset: str, dtype: str, ctx: int = 160, batch: int = 16) -> None:
        cfg, tensors = preset_model(preset, dtype)
        self.eng = Session.build(gpu, cfg, tensors.get, Settings(batch=batch), ctx)
        self.prompt = list(range(100, 116))

    def use(self, tuning: Tuning) -> None:
        self.eng.rebuild(tuning)

    def step_gpu(self, tuning: Tuning | None = None) -> float:
        """GPU seconds of one decode step with 116 keys in the cache (under `tuning` if given)."""
        if tuning is not None:
            self.use(tuning)
        return self.eng.step_gpu_seconds(self.prompt + [0] * 100, reps=15)

    def tok_s(self, n: int = 64) -> float:
        return n / self.eng.time_decode(self.prompt, n)

    def prefill_gpu(self, n: int = 512) -> float:
        """GPU seconds of an n-token prompt through the layers."""
        return self.eng.prefill_gpu_seconds(n, reps=5)

    def pp_tok_s(self, n: int = 512) -> float:
        ids = list(range(n))
        self.eng.time_prefill(ids)
        return n / self.eng.time_prefill(ids)


def start_tuning(gpu: Any, preset: str, switches: tuple[str, ...] = ()) -> Tuning:
    """The preset's default Tuning with the --with switches on ("field", or "field=N")."""
    shape = PRESETS[preset]
    values = {f.partition("=")[0]: int(f.partition("=")[2]) if "=" in f else True for f in switches}
    return dataclasses.replace(default_tuning(gpu, shape["hidden"], shape["head_dim"]), **values)


def sweep(gpu: Any, preset: str, dtype: str, switches: tuple[str, ...] = ()) -> dict[str, Any]:
    b = DecodeBench(gpu, preset, dtype)
    start = start_tuning(gpu, preset, switches)
    int8 = start.int8 and dtype in INT8_FORMATS  # the shapes this weight type decodes with
    spread = start.spread and dtype in SPREAD_FORMATS
    cur = {r: tuple(start.shape(r, int8, spread).values()) for r in ROLES}
    attn = {"chunk": start.attn_chunk}
    shapes = SHAPES
    if start.persist:  # the layers' mat-vecs take PERSIST_WG threads (the head keeps its own)
        shapes = [(PERSIST_WG, tpr, ilp) for tpr in (8, 16, 32, 64, 128, 256) for ilp in (1, 2, 4)]
        cur = {r: (PERSIST_WG, *cur[r][1:]) if r != "head" else cur[r] for r in ROLES}

    def measure() -> float:
        return b.step_gpu(dataclasses.replace(start, mv=tuple((r, *cur[r]) for r in ROLES), mv_int8=(), mv_spread=(),
                                              attn_chunk=attn["chunk"]))

    measure()  # (the first step after a build runs slow: pipelines, clocks)
    best = start_us = measure()
    print(f"{gpu.backend} {dtype} start    step {best * 1e6:.0f} us", file=sys.stderr, flush=True)
    t0 = time.time()
    for role in ROLES:
        best = descend(cur, role, SHAPES if role == "head" else shapes, measure, best)
        print(f"{gpu.backend} {dtype} {role:8s} -> {cur[role]}  step {best * 1e6:.0f} us", file=sys.stderr, flush=True)
    best = descend(attn, "chunk", CHUNKS, measure, best)
    measure()
    per = {k["kernel"]: k["us"] for k in b.eng.step_kernels(b.prompt)}
    tok_s = b.tok_s()
    return {"backend": gpu.backend, "dtype": dtype, "preset": preset, "tuning": {r: cur[r] for r in ROLES},
            "attn_chunk": attn["chunk"], "start_step_gpu_us": start_us * 1e6, "step_gpu_us": best * 1e6, "tg64_tok_s": tok_s, "sweep_s": time.time() - t0,
            "profile_us": per}


def sweep_prefill(gpu: Any, preset: str, dtype: str, switches: tuple[str, ...] = (), n: int = 512) -> dict[str, Any]:
    cfg, tensors = preset_model(preset, dtype)
    eng = Session.build(gpu, cfg, tensors.get, Settings(batch=n), n + 8)
    base = start_tuning(gpu, preset, switches)
    cur = {r: base.tm(r) for r in ("qkv", "o", "gate_up", "down")}
    splits = {r: base.split(r) for r in ("o", "down")}

    def measure() -> float:
        eng.rebuild(dataclasses.replace(base, mm=tuple(cur.items()), splits=tuple(splits.items())))
        return eng.prefill_gpu_seconds(n, reps=5)

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


def sweep_blocks(gpu: Any, preset: str, dtype: str, switches: tuple[str, ...] = ()) -> dict[str, Any]:
    """Row blocks per mat-vec workgroup, per role, from the default shapes (one prologue for
    more rows against fewer, longer-lived workgroups)."""
    b = DecodeBench(gpu, preset, dtype)
    base = start_tuning(gpu, preset, switches)
    cur = {r: base.row_blocks(r) for r in ROLES}

    def measure() -> float:
        return b.step_gpu(dataclasses.replace(base, blocks=tuple(cur.items())))

    measure()  # (the first step after a build runs slow)
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


def switch_ab(gpu: Any, preset: str, dtype: str, field: str, switches: tuple[str, ...] = (),
              prefill: bool = False) -> dict[str, Any]:
    """Decode with a Tuning switch off and on (alternated twice), same kernel shapes: the step's
    GPU time and tg64; with `prefill`, a 512-token prompt's GPU time through the layers and
    pp512 instead. `field` may name the two values to compare: "early=1,2" ("off" is the
    first, "on" the second)."""
    b = DecodeBench(gpu, preset, dtype, ctx=520 if prefill else 160, batch=512 if prefill else 16)
    field, _, given = field.partition("=")
    values: tuple[Any, Any] = tuple(int(v) for v in given.split(",")) if given else (False, True)  # type: ignore[assignment]
    out: dict[str, Any] = {"backend": gpu.backend, "dtype": dtype, "preset": preset, "switch": field,
                           "values": list(values)}
    base = start_tuning(gpu, preset, switches)
    for on in (False, True, False, True):
        b.use(dataclasses.replace(base, **{field: values[on]}))
        key = "on" if on else "off"
        if prefill:
            out.setdefault(f"{key}_step_gpu_us", []).append(b.prefill_gpu() * 1e6)
            out.setdefault(f"{key}_tg64_tok_s", []).append(b.pp_tok_s())  # (pp512 here)
            continue
        b.tok_s()  # warm-up
        out.setdefault(f"{key}_step_gpu_us", []).append(b.step_gpu() * 1e6)
        out.setdefault(f"{key}_tg64_tok_s", []).append(b.tok_s())
    print(f"{gpu.backend} {preset} {dtype} {field} {values[0]} | {values[1]}: off " + " / ".join(
        f"{t:.0f} us {r:.0f} tok/s" for t, r in zip(out["off_step_gpu_us"], out["off_tg64_tok_s"])) + " | on " + " / ".join(
        f"{t:.0f} us {r:.0f} tok/s" for t, r in zip(out["on_step_gpu_us"], out["on_tg64_tok_s"])),
        file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="qwen2.5-0.5b")
    ap.add_argument("--dtype", default="f16")
    ap.add_argument("--backend", default="dawn")
    ap.add_argument("--out", default=None)
    ap.add_argument("--prefill", action="store_true", help="sweep the prompt matmul instead (with --ab: time prompts)")
    ap.add_argument("--int8", action="store_true", help="compare float and int8 activations instead (--ab int8)")
    ap.add_argument("--ab", default=None,
                    help="compare this Tuning switch off and on instead (int8, spread), or two of its values: early=1,2")
    ap.add_argument("--with", dest="switches", default="",
                    help="comma list of Tuning switches to turn on first, or fields to set: persist=264")
    ap.add_argument("--blocks", action="store_true", help="sweep row blocks per mat-vec workgroup instead")
    a = ap.parse_args()
    switches = tuple(f for f in a.switches.split(",") if f)
    ab = "int8" if a.int8 else a.ab
    results = []
    for backend in a.backend.split(","):
        gpu = open_gpu(backend)
        for dtype in a.dtype.split(","):
            if ab:
                row = switch_ab(gpu, a.preset, dtype, ab, switches, a.prefill)
            else:
                fn = sweep_prefill if a.prefill else sweep_blocks if a.blocks else sweep
                row = fn(gpu, a.preset, dtype, switches)
            results.append(row)
            print(json.dumps(row), flush=True)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()
