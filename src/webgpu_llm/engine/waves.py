"""How many ways a prompt matmul on the f16 tiles splits K so that its workgroups fill the GPU.

A tile matmul's time grows by waves: on an H100 (132 multiprocessors) the 1.5B gate/up took
44.5 / 47.3 / 97.3 / 154.1 / 212.2 µs at 68 / 132 / 264 / 396 / 528 workgroups of the same
walk over K (docs/performance.md, "What limits prompts"), so 133 workgroups cost two waves. A
matrix of few row blocks (QKV, O, down) fills a fraction of one wave, or leaves most of its
last one idle, and splitting K trades that for partial sums (written, then read by the kernel
that adds them) and, for QKV and gate/up, a dispatch that applies their epilogue to the sums.

A matmul whose whole waves leave a last one mostly idle (the 1.5B gate/up: 280 workgroups,
2.1 waves) can instead run its whole waves' row blocks in one dispatch and split only the rest
over K, as many ways as one wave holds (`tail_split`, where its epilogue has a kernel of its own
to run on the sums: QKV and gate/up).

The cost model below is that trade in microseconds, its constants from the H100's
measurements; `Tuning.sms` (the multiprocessors) turns it on in place of `Tuning.splits`, for
tiles of 128 x 128 outputs and larger (`by_waves`).
"""

from __future__ import annotations

from typing import NamedTuple

from ..kernels.formats import UNIT
from ..kernels.mma import TileShape

# a 128 x 128 workgroup's step of 32 inputs, and a 256 x 128 one's (H100: 4x2x2x4 and 4x2x4x4)
STEP_US, STEP_US_PER_AREA = 0.4, 0.6 / (128 * 128)
WAVE_US = 2.5  # a wave's own cost beside its steps (the K sweep's intercept: loads in, sums out)
DISPATCH_US = 5.0  # a dependent dispatch in a chain (the epilogue kernel on a split's sums)
BYTES_PER_US = 2.5e6  # partial sums written and read back (~2.5 TB/s)
# Tiles of fewer outputs do not run a wave at a time: 64 x 64 tiles took 41 / 78 / 156 µs at
# 68 / 132 / 264 workgroups of the same sweep, time following the workgroups, and the model's
# splits of the 0.5B's quantized prompts on them (2x2x2x2) ran its pp512 10 % slower (H100).
WAVE_AREA = 128 * 128


def _up(a: int, b: int) -> int:
    return -(-a // b)


def by_waves(shape: TileShape) -> bool:
    """Whether the model prices this workgroup's matmuls: output tiles of WAVE_AREA or more."""
    return shape.bm * shape.bn >= WAVE_AREA


def _walk_us(units: int, shape: TileShape) -> float:
    """A wave's microseconds: a workgroup's steps over `units` units of K, and the wave's own."""
    step_us = (STEP_US + STEP_US_PER_AREA * shape.bm * shape.bn) * shape.ku
    return _up(units, shape.ku) * step_us + WAVE_US


def _partials_us(splits: int, rows: int, tokens: int) -> float:
    """Partial sums of `rows` rows written and read back."""
    return splits * rows * tokens * 4 * 2 / BYTES_PER_US


def split_cost(rows: int, kp: int, tokens: int, shape: TileShape, sms: int, splits: int,
               epilogue_dispatch: bool) -> float:
    """Microseconds a prompt matmul of `rows` weight rows, `kp` inputs and `tokens` tokens
    takes split `splits` ways on `sms` multiprocessors (one workgroup at a time each)."""
    tiles = _up(rows, shape.bn) * _up(tokens, shape.bm)
    us = _up(tiles * splits, sms) * _walk_us(_up(_up(kp, UNIT), splits), shape)
    if splits > 1:
        us += _partials_us(splits, rows, tokens) + (DISPATCH_US if epilogue_dispatch else 0.0)
    return us


def tail_split(pairs: int, kp: int, tokens: int, shape: TileShape, sms: int, most: int) -> tuple[float, int, int] | None:
    """A matmul's whole waves in one dispatch and the row blocks left for a last, mostly idle
    wave in another, split over K as many ways as one wave holds, their epilogue then applied
    to their sums (as Stream-K's data-parallel waves and split tail): (microseconds, the
    first pair of the tail, its splits), or None where there is no such tail."""
    per = shape.bn // 2
    blocks, tb, units = _up(pairs, per), _up(tokens, shape.bm), _up(kp, UNIT)
    full = blocks * tb // sms
    main = full * sms // tb  # whole row blocks within the whole waves
    tail = blocks - main
    ways = min(most, units, sms // (tail * tb)) if full and tail else 0
    if ways < 2:
        return None
    us = (_up(main * tb, sms) * _walk_us(units, shape) + _walk_us(_up(units, ways), shape)
          + _partials_us(ways, 2 * (pairs - main * per), tokens) + DISPATCH_US)
    return us, main * per, ways


def fill_splits(rows: int, kp: int, tokens: int, shape: TileShape, sms: int, most: int,
                epilogue_dispatch: bool = False, margin: float = 0.03) -> int:
    """The fewest K splits (1 to `most`) within `margin` of the cheapest by split_cost: a split
    that gains less than that is not worth its partials on a GPU the model only approximates."""
    costs = {s: split_cost(rows, kp, tokens, shape, sms, s, epilogue_dispatch) for s in range(1, min(most, _up(kp, UNIT)) + 1)}
    best = min(costs.values())
    return min(s for s, c in costs.items() if c <= best * (1 + margin))


class Split(NamedTuple):
    """How a prompt matmul splits K: `ways` for the whole matmul, or with `tail_ways` > 1 its
    pairs from `pair0` on in a dispatch of their own, split that many ways."""

    ways: int = 1
    pair0: int = 0
    tail_ways: int = 1


def plan_split(rows: int, pairs: int, kp: int, tokens: int, shape: TileShape, sms: int, most: int,
               epilogue_dispatch: bool, margin: float = 0.03) -> Split:
    """The cheaper of fill_splits's whole split and, where the epilogue has a dispatch of its
    own to run on sums (`epilogue_dispatch`), tail_split's (by more than `margin`)."""
    ways = fill_splits(rows, kp, tokens, shape, sms, most, epilogue_dispatch, margin)
    whole = split_cost(rows, kp, tokens, shape, sms, ways, epilogue_dispatch)
    tail = tail_split(pairs, kp, tokens, shape, sms, most) if epilogue_dispatch else None
    if tail is not None and tail[0] < whole * (1 - margin):
        return Split(1, tail[1], tail[2])
    return Split(ways)
