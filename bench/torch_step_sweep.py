"""GPU time of the compiled decode step under other mat-vec shapes, one role at a time.

The step is `torch_generate.py`'s compiled decode step (Qwen2.5-0.5B shape by default, random
weights, static cache): compiled once per dtype, then, for each shape to try, its recording is made
again with `webgpu_llm.torch.configure(matvec_shapes=...)` given that role's (columns, input length) and the whole
step is timed on the GPU (timestamps, median of `--reps`). Only GPU time is measured, which
the host does not move: one process can compare every setting.

    python bench/torch_step_sweep.py --backend dawn --out sweep.json
    python bench/torch_step_sweep.py --tiny --out /tmp/s.json      # smoke test (llvmpipe)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import warnings
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import webgpu_llm  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch
import torch_generate as tg

import webgpu_llm.torch as wt
from webgpu_llm.kernels.fused_linear import default_shape
from webgpu_llm.torch.compile.backend import RUNNERS
from webgpu_llm.torch.ops import plans

# (threads per workgroup, columns per workgroup) to try for every role
CANDIDATES = [(256, 2), (256, 4), (256, 8), (256, 16), (256, 32), (128, 1), (128, 2), (128, 4), (128, 8), (64, 1),
              (64, 2), (512, 4), (512, 8)]


def roles(cfg: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """(columns, input length) of each mat-vec of a decoder layer, and the LM head's."""
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    d = h // cfg["num_attention_heads"]
    return {"qkv": (h + 2 * cfg["num_key_value_heads"] * d, h), "o": (h, h), "gate_up": (i, h), "down": (h, i),
            "head": (cfg["vocab_size"], h)}


def step_us(model: torch.nn.Module, prompt: torch.Tensor, reps: int) -> tuple[float, int]:
    """Record the decode step again (with the shapes now set) and time it on the GPU."""
    for r in RUNNERS:
        for rec in r.recorded.values():
            rec.release()
        r.recorded.clear()
    tg.timed_generate(model, prompt, 4, cache_implementation="static")  # records on this sight
    prog = tg.decode_step_program()
    return prog.time_gpu(1, reps=reps) * 1e6, len(prog.dispatches)


def compiled_model(cfg: dict[str, Any], dname: str) -> tuple[torch.nn.Module, torch.Tensor]:
    """A random-weight model of `cfg` in dtype `dname`, compiled, its decode step traced and
    recorded, and the 16-token prompt its step_us generates from."""
    prompt = torch.randint(0, cfg["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(1)).to("webgpu")
    model = tg.build(cfg, tg.DTYPES[dname])
    torch._dynamo.reset()
    tg.compile_forward(model)
    for _ in range(2):  # traced, then recorded
        tg.timed_generate(model, prompt, 4, cache_implementation="static")
    return model, prompt


def alternate(model: torch.nn.Module, prompt: torch.Tensor, setups: dict[str, Callable[[], None]], rounds: int = 3,
              reps: int = 30) -> dict[str, list[float]]:
    """An A/B inside one process: each setup (a callable that switches the code one way) in
    turn, `rounds` times, the launch plans cleared and the step recorded and timed after it."""
    times: dict[str, list[float]] = {name: [] for name in setups}
    for _ in range(rounds):
        for name, setup in setups.items():
            setup()
            plans.clear()
            times[name].append(step_us(model, prompt, reps)[0])
    return times


def ab_table(rows: list[dict[str, Any]], label: str, out: str) -> None:
    """Write the A/B rows (each with its `label` column and "old_us" / "new_us" lists) to `out`
    and print their medians as a table."""
    with open(out, "w") as f:
        json.dump(rows, f, indent=1)
    print(f"\n| {label} | old step µs | new step µs | change |\n| --- | --- | --- | --- |")
    for r in rows:
        o, n = statistics.median(r["old_us"]), statistics.median(r["new_us"])
        print(f"| {r[label]} | {o:.1f} | {n:.1f} | {100 * (n / o - 1):+.1f} % |")


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """"256x2,128x8" -> [(256, 2), (128, 8)]."""
    try:
        return [(int(w), int(c)) for w, c in (item.split("x") for item in text.split(","))]
    except ValueError:
        raise SystemExit(f"--shapes: expected WGxCOLS,... (such as 256x2,128x8), got {text!r}") from None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON results path")
    ap.add_argument("--backend", default="dawn", choices=["wgpu", "dawn"])
    ap.add_argument("--dtypes", default="f16,f32")
    ap.add_argument("--roles", default="qkv,o,gate_up,down,head")
    ap.add_argument("--shapes", default=",".join(f"{w}x{c}" for w, c in CANDIDATES),
                    help="(threads per workgroup)x(columns per workgroup) settings to try, comma-separated")
    ap.add_argument("--rounds", type=int, default=1, help="passes over every setting (the table gives medians)")
    ap.add_argument("--reps", type=int, default=30, help="timed replays of the step per setting")
    tg.add_model_args(ap)
    args = ap.parse_args()
    candidates = parse_shapes(args.shapes)
    warnings.simplefilter("ignore")
    wt.set_backend(args.backend)
    if not wt.is_available() or not wt.context.ctx().gpu.has_timestamps:
        sys.exit("no WebGPU adapter with timestamp queries")
    cfg = tg.model_config(args)
    shapes = roles(cfg)
    results: list[dict[str, Any]] = []
    for dname in args.dtypes.split(","):
        model, prompt = compiled_model(cfg, dname)
        for rnd in range(args.rounds):
            wt.configure(matvec_shapes={})
            base, n = step_us(model, prompt, args.reps)
            results.append({"dtype": dname, "round": rnd, "role": "default", "step_us": base, "default_us": base})
            print(f"{dname} round {rnd}: default step {base:.1f} µs, {n} dispatches", flush=True)
            for role in args.roles.split(","):
                key = shapes[role]
                for wg, cols in candidates:
                    wt.configure(matvec_shapes={key: (wg, cols)})
                    us, _ = step_us(model, prompt, args.reps)
                    results.append({"dtype": dname, "round": rnd, "role": role, "n_k": key, "wg": wg, "cols": cols,
                                    "default_shape": default_shape(*key, role == "gate_up"), "step_us": us,
                                    "default_us": base})
                    print(f"  {role:8s} wg {wg:3d} cols {cols:2d}: {us:8.1f} µs ({us - base:+.1f})", flush=True)
        wt.configure(matvec_shapes={})
        again, _ = step_us(model, prompt, args.reps)
        results.append({"dtype": dname, "role": "default again", "step_us": again, "default_us": again})
        print(f"{dname}: default again {again:.1f} µs", flush=True)
        del model
    with open(args.out, "w") as f:
        json.dump({"command": " ".join([sys.executable, *sys.argv]), "device": wt.context.ctx().gpu.info,
                   "results": results}, f, indent=1)
    print("\n| dtype | role | default (wg, cols) | default µs | best (wg, cols) | step µs |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for dname in args.dtypes.split(","):
        base = statistics.median(r["step_us"] for r in results if r["dtype"] == dname and r["role"] == "default")
        for role in args.roles.split(","):
            rows = [r for r in results if r["dtype"] == dname and r["role"] == role]
            if not rows:
                continue
            med = {s: statistics.median(r["step_us"] for r in rows if (r["wg"], r["cols"]) == s)
                   for s in {(r["wg"], r["cols"]) for r in rows}}
            best = min(med, key=med.__getitem__)
            print(f"| {dname} | {role} | {rows[0]['default_shape']} | {base:.1f} | {best} | {med[best]:.1f} |")


if __name__ == "__main__":
    main()
