"""Statistics for timing samples: median with a distribution-free 95 % confidence interval.

Timing distributions are skewed (a long right tail from preemption and page faults), so the
median is the point estimate and its interval comes from order statistics: for n samples the
number below the true median is Binomial(n, 1/2), which gives the ranks that bracket it
without assuming any shape. Below 6 samples no pair of ranks reaches 95 % and the interval is
the full range (flagged by `ci_ok`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

CI_METHOD = "order-statistic interval on the median (binomial, distribution-free), 95 %"
_EXACT_MAX_N = 1000  # above this the normal approximation of the binomial is exact enough


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        raise ValueError("median of no samples")
    mid = n // 2
    return float(s[mid]) if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of the sorted samples bracketing the median, or None if n is too small.

    `lo` is the largest k with P(Bin(n, 1/2) <= k - 1) <= alpha/2; by symmetry hi = n - 1 - lo.
    The interval [x_lo, x_hi] covers the median with probability >= `confidence`.
    """
    if n < 1:
        raise ValueError("no samples")
    alpha_half = (1.0 - confidence) / 2.0
    if n > _EXACT_MAX_N:
        z = _normal_quantile(1.0 - alpha_half)
        k = math.floor(n / 2.0 - z * math.sqrt(n) / 2.0)
        return (k, n - 1 - k) if k >= 0 else None
    # With X = number of samples below the true median, the 1-based ranks (l, n - l + 1)
    # cover it with probability 1 - 2 P(X <= l - 1); take the largest l that keeps >= 95 %.
    total = 2**n
    cum = 0  # sum of C(n, i) for i <= rank - 1, exact integers
    best = None
    for rank in range(1, n // 2 + 1):
        cum += math.comb(n, rank - 1)
        if cum / total > alpha_half:
            break
        best = rank
    if best is None:
        return None
    return best - 1, n - best


def _normal_quantile(p: float) -> float:
    """Inverse standard normal CDF by bisection on erf (only used for n > 1000)."""
    a, b = -10.0, 10.0
    for _ in range(100):
        m = (a + b) / 2.0
        if 0.5 * (1.0 + math.erf(m / math.sqrt(2.0))) < p:
            a = m
        else:
            b = m
    return (a + b) / 2.0


def median_ci(xs: Sequence[float], confidence: float = 0.95) -> tuple[float, float, bool]:
    """(lo, hi, ok): the order-statistic interval; ok is False when n is too small for it."""
    s = sorted(float(x) for x in xs)
    ranks = median_ci_ranks(len(s), confidence)
    if ranks is None:
        return s[0], s[-1], False
    return s[ranks[0]], s[ranks[1]], True


def summarize(xs: Sequence[float], scale: float = 1.0, keep_samples: bool = True,
              digits: int = 3) -> dict[str, Any]:
    """Median, 95 % CI and spread of `xs` (each multiplied by `scale`, e.g. 1e6 for µs)."""
    vals = [float(x) * scale for x in xs]
    if not vals:
        raise ValueError("no samples to summarize")
    if any(math.isnan(v) or math.isinf(v) for v in vals):
        raise ValueError("samples contain NaN or infinity")
    lo, hi, ok = median_ci(vals)
    out: dict[str, Any] = {
        "median": _r(median(vals), digits),
        "ci95": [_r(lo, digits), _r(hi, digits)],
        "mean": _r(sum(vals) / len(vals), digits),
        "min": _r(min(vals), digits),
        "max": _r(max(vals), digits),
        "n": len(vals),
    }
    if not ok:
        out["ci_ok"] = False  # too few samples: the interval is the full range
    if keep_samples:
        out["samples"] = [_r(v, digits) for v in vals]
    return out


def _r(x: float, digits: int) -> float:
    return round(float(x), digits)


def timer_overhead_ns(reps: int = 2001) -> float:
    """Median cost of one `perf_counter_ns()` bracket, subtracted from per-call timings."""
    pc = time.perf_counter_ns
    d = []
    for _ in range(reps):
        t0 = pc()
        t1 = pc()
        d.append(t1 - t0)
    return median(d)
