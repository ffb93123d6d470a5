"""Probe: the ceiling of f16 activations for the down projection.

The down projection reads its x (f32, beside the weights: 32 bytes of x per 16-byte word of
f16 weights) from memory, as many bytes through L1 as its weights. This times the decode step
with down's x loads replaced by one uniform load (wrong values, the same weight reads): an f16
x would save at most half of the difference.

    python bench/probe_down_x.py --backend dawn
"""

from __future__ import annotations

import argparse
from typing import Any

import webgpu_llm.models.transformer as tr
from webgpu_llm.generation.engine import Engine
from webgpu_llm.generation.sampling import SamplingParams
from webgpu_llm.models.presets import preset_model
from webgpu_llm.runtime.gpu import open_gpu
from webgpu_llm.runtime.program import Kernel

PLAIN_X = "fn X(xb: u32, i: u32) -> vec4<f32> { return x[xb + i]; }"
NO_X = "fn X(xb: u32, i: u32) -> vec4<f32> { return vec4<f32>(f32(i) * 1e-9) + x[xb]; }"
ORIGINAL = tr.matvec_kernel


def without_down_x(spec: Any, **kw: Any) -> Kernel:
    k = ORIGINAL(spec, **kw)
    if spec.prologue == "plain" and spec.epilogue == "add":
        assert PLAIN_X in k.wgsl
        k = Kernel(k.name, k.wgsl.replace(PLAIN_X, NO_X), k.bindings)
    return k


def step_us(eng: Engine) -> float:
    """Best of 3 medians of the step's GPU time, each from 116 cached keys."""
    best = float("inf")
    for _ in range(3):
        eng._steps.clear()
        eng.prefill(list(range(100, 116)) + [0] * 100, 0, SamplingParams(), 0)
        best = min(best, eng.step_program(SamplingParams()).time_gpu(1, reps=20))
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="dawn")
    ap.add_argument("--presets", default="qwen2.5-0.5b,qwen2.5-1.5b")
    a = ap.parse_args()
    gpu = open_gpu(a.backend)
    for preset in a.presets.split(","):
        cfg, tensors = preset_model(preset, "f16")
        model = tr.Transformer(gpu, cfg, tensors.get, ctx=160, batch=16)
        eng = Engine(model)
        base = step_us(eng)
        tr.matvec_kernel = without_down_x
        model.rebuild(model.tuning)
        free = step_us(eng)
        tr.matvec_kernel = ORIGINAL
        model.rebuild(model.tuning)
        print(f"{preset} f16 {a.backend}: step {base:.0f} us, down without x loads {free:.0f} us, "
              f"default again {step_us(eng):.0f} us")


if __name__ == "__main__":
    main()
