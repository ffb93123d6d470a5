"""How much to measure: the full protocol (>= 30 repetitions per point) and `--quick`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

MIN_REPS = 30  # the protocol's minimum repetitions per point
KIB, MIB = 1024, 1024 * 1024


@dataclass
class Config:
    quick: bool = False
    reps: int = 50  # timed samples per point (warm-ups excluded)
    method_reps: int = 50  # rounds of the methods (cheap, and their order is checked in CI)
    warmup: int = 3  # untimed samples before each point
    dispatches: int = 256  # N: dispatches per sample of `sequential` and `batched`
    naive_block: int = 32  # dispatch+submit+wait rounds per `naive` sample
    call_block: int = 32  # calls per sample of the per-call breakdown
    readback_block: int = 8  # round trips per sample of the read-back rows
    sweep_bytes: list[int] = field(default_factory=lambda: [4 * KIB * 4**i for i in range(9)])
    sweep_cpu_max_bytes: int = 16 * MIB  # cap on CPU adapters (llvmpipe reads ~GB/s)
    sweep_batch: int = 8  # dispatches per timestamped pass in the sweep

    @property
    def min_reps_met(self) -> bool:
        return self.reps >= MIN_REPS

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["min_reps"] = MIN_REPS
        d["min_reps_met"] = self.min_reps_met
        return d


def make_config(quick: bool = False, reps: int | None = None) -> Config:
    if quick:
        cfg = Config(quick=True, reps=20, warmup=2, dispatches=64, naive_block=16, call_block=16,
                     readback_block=4, sweep_bytes=[4 * KIB * 8**i for i in range(4)],
                     sweep_cpu_max_bytes=2 * MIB, sweep_batch=4)
    else:
        cfg = Config()
    if reps is not None:
        if reps < 1:
            raise ValueError("--reps must be at least 1")
        cfg.reps = reps
    # On llvmpipe wgpu-native's submit blocks while the previous submission runs, so naive and
    # sequential differ by little there: more rounds keep the quick run's medians in order.
    cfg.method_reps = max(cfg.reps, 40) if quick else cfg.reps
    return cfg
