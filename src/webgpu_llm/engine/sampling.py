"""Sampling settings and a numpy reference of the GPU sampler (used by tests)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from ..kernels.common import pack_state
from ..kernels.sampling import CAND


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None

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

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def filtered(self) -> bool:
        """Whether the top-k/top-p/min-p path is needed (else one arg-max pass does it)."""
        return not self.greedy and (self.top_k > 0 or self.top_p < 1.0 or self.min_p > 0.0)

    @property
    def penalised(self) -> bool:
        return self.repeat_penalty != 1.0 and self.repeat_last_n > 0

    def resolved_seed(self) -> int:
        return secrets.randbits(32) if self.seed is None else int(self.seed) & 0xFFFFFFFF

    def state(self, pos: int, n: int, seed: int, limit: int = 0, n_gen: int = 0) -> np.ndarray:
        return pack_state(pos=pos, n=n, seed=seed, temperature=self.temperature, top_k=self.top_k,
                          top_p=self.top_p, min_p=self.min_p, repeat_penalty=self.repeat_penalty,
                          repeat_last_n=self.repeat_last_n, n_gen=n_gen, limit=limit)


def reference_distribution(logits: np.ndarray, p: SamplingParams, history: list[int] | None = None) -> np.ndarray:
    """The probability of each token under the GPU sampler's semantics (llama.cpp's chain:
    penalty -> top-k -> top-p -> min-p -> temperature), as a float64 vector."""
    lg = logits.astype(np.float64).copy()
    if p.penalised and history:
        for tok in set(history[-p.repeat_last_n:]):
            lg[tok] = lg[tok] / p.repeat_penalty if lg[tok] > 0 else lg[tok] * p.repeat_penalty
    out = np.zeros_like(lg)
    if p.greedy:
        out[int(np.argmax(lg))] = 1.0
        return out
    if not p.filtered:
        e = np.exp((lg - lg.max()) / p.temperature)
        return e / e.sum()
    order = np.argsort(-lg, kind="stable")
    k = min(p.top_k, CAND) if p.top_k > 0 else CAND
    top = order[:k]
    m0 = lg[top[0]]
    z = np.exp(lg[top] - m0).sum() if p.top_k > 0 else np.exp(lg - m0).sum()
    keep = k
    if p.top_p < 1.0:
        cum = np.cumsum(np.exp(lg[top] - m0) / z)
        hit = np.nonzero(cum >= p.top_p)[0]
        if len(hit):
            keep = int(hit[0]) + 1
    if p.min_p > 0.0:
        floor = m0 + np.log(p.min_p)
        j = 1
        while j < keep and lg[top[j]] >= floor:
            j += 1
        keep = j
    sel = top[:keep]
    w = np.exp((lg[sel] - m0) / p.temperature)
    out[sel] = w / w.sum()
    return out
