"""Confidence intervals for accuracies: the Wilson score interval, which stays inside [0, 1] at small n."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the 97.5 % quantile of the standard normal


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for `correct` successes out of `n` (95 % by default); (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= correct <= n:
        raise ValueError(f"correct={correct} is outside 0..{n}")
    p = correct / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # at 0 and at n the bounds are exactly 0 and 1; rounding would leave 1e-16 off them
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def mcnemar(b: int, c: int) -> float:
    """Exact two-sided McNemar test on paired outcomes: `b` items right only under A, `c` right only under B. Under
    the null both are equally likely, so min(b, c) is binomial(b + c, 1/2); p = 2 P(X <= min(b, c)), capped at 1,
    computed in exact integers (1.0 when there are no discordant pairs)."""
    if b < 0 or c < 0:
        raise ValueError(f"counts must be non-negative, not b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)
