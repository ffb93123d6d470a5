"""Sampling settings: what the GPU sampler (kernels/sampling.py) reads from the state buffer."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..kernels.common import pack_state


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    # OpenAI's additive penalties, over the same last repeat_last_n tokens as repeat_penalty
    # (llama.cpp's rule): logit -= frequency_penalty * count + presence_penalty * (count > 0)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def check(self) -> None:
        if self.temperature < 0:
            raise UserError(f"--temperature {self.temperature}: must be >= 0")
        if self.top_k < 0:
            raise UserError(f"--top-k {self.top_k}: must be >= 0 (0 = off)")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"--top-p {self.top_p}: must be in (0, 1]")
        if not 0.0 <= self.min_p < 1.0:
            raise UserError(f"--min-p {self.min_p}: must be in [0, 1)")
        if self.repeat_penalty <= 0:
            raise UserError(f"--repeat-penalty {self.repeat_penalty}: must be > 0 (1 = off)")
        if not 0 <= self.repeat_last_n <= 256:
            raise UserError(f"repeat_last_n {self.repeat_last_n}: must be in [0, 256]")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise UserError(f"{name} {getattr(self, name)}: must be in [-2, 2] (0 = off)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def filtered(self) -> bool:
        """Whether the top-k/top-p/min-p path is needed (else one arg-max pass does it)."""
        return not self.greedy and (self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0)

    @property
    def penalised(self) -> bool:
        return self.repeat_last_n > 0 and (self.repeat_penalty != 1.0 or self.frequency_penalty != 0.0
                                           or self.presence_penalty != 0.0)

    def resolved_seed(self) -> int:
        return secrets.randbits(32) if self.seed is None else int(self.seed) & 0xFFFFFFFF

    def state(self, pos: int, n: int, seed: int, limit: int = 0, n_gen: int = 0) -> np.ndarray:
        return pack_state(pos=pos, n=n, seed=seed, temperature=self.temperature, top_k=self.top_k,
                          top_p=self.top_p, min_p=self.min_p, repeat_penalty=self.repeat_penalty,
                          repeat_last_n=self.repeat_last_n, n_gen=n_gen, limit=limit,
                          frequency_penalty=self.frequency_penalty, presence_penalty=self.presence_penalty)
