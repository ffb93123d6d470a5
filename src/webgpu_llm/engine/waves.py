"""How many ways a prompt matmul on the f16 tiles splits K so that its workgroups fill the GPU.

A tile matmul's time grows by waves: on an H100 (132 multiprocessors) the 1.5B gate/up took
44.5 / 47.3 / 97.3 / 154.1 / 212.2 µs at 68 / 132 / 264 / 396 / 528 workgroups of the same
walk over K (docs/performance.md, "What limits prompts"), so 133 workgroups cost two waves. A
matrix of few row blocks (QKV, O, down) fills a fraction of one wave, or leaves most of its
last one idle, and splitting K trades that for partial sums (written, then read by the kernel
that adds them) and, for QKV and gate/up, a dispatch that applies their epilogue to the sums.

The cost model below is that trade in microseconds, its constants from the H100's
measurements; `Tuning.sms` (the multiprocessors) turns it on in place of `Tuning.splits`.
"""

from __future__ import annotations

from ..kernels.formats import UNIT
from ..kernels.mma import TileShape

# a 128 x 128 workgroup's step of 32 inputs, and a 256 x 128 one's (H100: 4x2x2x4 and 4x2x4x4)
STEP_US, STEP_US_PER_AREA = 0.4, 0.6 / (128 * 128)
WAVE_US = 2.5  # a wave's own cost beside its steps (the K sweep's intercept: loads in, sums out)
DISPATCH_US = 5.0  # a dependent dispatch in a chain (the epilogue kernel on a split's sums)
BYTES_PER_US = 2.5e6  # partial sums written and read back (~2.5 TB/s)


def split_cost(rows: int, kp: int, tokens: int, shape: TileShape, sms: int, splits: int,
               epilogue_dispatch: bool) -> float:
    """Microseconds a prompt matmul of `rows` weight rows, `kp` inputs and `tokens` tokens
    takes split `splits` ways on `sms` multiprocessors (one workgroup at a time each)."""
    tiles = -(-rows // shape.bn) * -(-tokens // shape.bm)
    waves = -(-tiles * splits // sms)
    steps = -(-(-(-kp // UNIT) // splits) // shape.ku)
    step_us = (STEP_US + STEP_US_PER_AREA * shape.bm * shape.bn) * shape.ku
    us = waves * (steps * step_us + WAVE_US)
    if splits > 1:
        us += splits * rows * tokens * 4 * 2 / BYTES_PER_US + (DISPATCH_US if epilogue_dispatch else 0.0)
    return us


def fill_splits(rows: int, kp: int, tokens: int, shape: TileShape, sms: int, most: int,
                epilogue_dispatch: bool = False, margin: float = 0.03) -> int:
    """The fewest K splits (1 to `most`) within `margin` of the cheapest by split_cost: a split
    that gains less than that is not worth its partials on a GPU the model only approximates."""
    costs = {s: split_cost(rows, kp, tokens, shape, sms, s, epilogue_dispatch) for s in range(1, most + 1)
             if s <= -(-kp // UNIT)}
    best = min(costs.values())
    return min(s for s, c in costs.items() if c <= best * (1 + margin))
