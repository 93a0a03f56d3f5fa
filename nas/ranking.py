"""Rank correlations between two scorings of the same candidates (low budget against high,
curve point against final score): Spearman's rho and Kendall's tau-b, ties handled as scipy
handles them. Plain Python, for the tens to thousands of candidates of a study; no numpy, scipy
or torch, so `hnas fidelity` and the benchmarks share them. A NaN on either side makes the
figure NaN, as scipy's default (`nan_policy="propagate"`): a NaN has no place in an order, and
ranking it anyway gives a figure that looks like evidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class RankError(ValueError):
    """Two scorings of different lengths."""


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 0, ties sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            result[order[k]] = (i + j) / 2
        i = j + 1
    return result


def _check_pairs(xs: Sequence[float], ys: Sequence[float]) -> bool:
    """Whether the pairs can be ranked (no NaN); RankError when the lengths differ."""
    if len(xs) != len(ys):
        raise RankError(f"rank correlation of {len(xs)} against {len(ys)} values")
    return not any(math.isnan(v) for v in (*xs, *ys))


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rho (Pearson on average ranks); NaN when either side is constant or holds
    a NaN."""
    if not _check_pairs(xs, ys) or len(xs) < 2:
        return float("nan")
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else float("nan")


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Kendall's tau-b (ties on either side handled as in scipy.stats.kendalltau's default):
    (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y)); NaN when a side is constant
    or holds a NaN. O(n^2), for the tens of architectures compared here."""
    if not _check_pairs(xs, ys):
        return float("nan")
    concordant = discordant = tied_x = tied_y = 0
    n = len(xs)
    for i in range(n):
        for j in range(i + 1, n):
            # signs by comparison, not subtraction: inf - inf would be NaN, not a tie
            dx = (xs[i] > xs[j]) - (xs[i] < xs[j])
            dy = (ys[i] > ys[j]) - (ys[i] < ys[j])
            if dx == 0 and dy == 0:
                tied_x += 1
                tied_y += 1
            elif dx == 0:
                tied_x += 1
            elif dy == 0:
                tied_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return (concordant - discordant) / denominator if denominator else float("nan")
