"""The real decode step of a preset model with random weights, and a GPU timer for variants of
it: what bench/probe_l2_warm.py and bench/probe_floor.py both stand on."""

from __future__ import annotations

from collections import Counter

import numpy as np

from webgpu_llm.generation.engine import Engine
from webgpu_llm.generation.sampling import SamplingParams
from webgpu_llm.models.presets import preset_model
from webgpu_llm.models.transformer import Transformer
from webgpu_llm.runtime.gpu import open_gpu
from webgpu_llm.runtime.program import Program


class StepProbe:
    def __init__(self, backend: str, preset: str, dtype: str, reps: int = 30) -> None:
        self.gpu = open_gpu(backend)
        self.cfg, tensors = preset_model(preset, dtype)
        self.engine = Engine(Transformer(self.gpu, self.cfg, tensors.get, ctx=160, batch=16))
        self.step = self.engine.step_program(SamplingParams())
        self.prompt = np.random.default_rng(1).integers(0, self.cfg.vocab, 16).tolist()
        self.reps = reps

    def kinds(self) -> dict[str, int]:
        """The step's dispatches counted by label (kernel kind), in the step's order."""
        return dict(Counter(d.label for d in self.step.dispatches))

    def time_us(self, p: Program) -> float:
        """GPU µs of one replay of `p`: the best of 3 medians, each from the same position
        (a prefill first: the step advances the position)."""
        best = float("inf")
        for _ in range(3):
            self.engine.prefill(self.prompt, 0, SamplingParams(), 0)
            best = min(best, p.time_gpu(1, reps=self.reps))
        return best * 1e6
