"""nas.ranking against scipy's figures, worked by hand: ties, NaN and infinities."""

from __future__ import annotations

import math

import pytest

from nas.ranking import RankError, kendall_tau, ranks, spearman

NAN, INF = float("nan"), float("inf")


def test_ties_share_their_average_rank():
    assert ranks([3.0, 1.0, 3.0, 2.0]) == [2.5, 0.0, 2.5, 1.0]


def test_a_swapped_pair():
    xs, ys = [1, 2, 3, 4], [1, 3, 2, 4]
    assert spearman(xs, ys) == pytest.approx(0.8)
    assert kendall_tau(xs, ys) == pytest.approx(4 / 6)


@pytest.mark.parametrize("at", [0, 2])
def test_a_nan_on_either_side_makes_the_figure_nan(at):
    xs, ys = [1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]
    for low, high in ((xs[:at] + [NAN] + xs[at + 1:], ys), (xs, ys[:at] + [NAN] + ys[at + 1:])):
        assert math.isnan(spearman(low, high)) and math.isnan(kendall_tau(low, high))


def test_infinities_are_ranked_and_tie_with_each_other():
    # a diverged run (inf loss) is the worst, and two of them are a tie, as in scipy
    xs, ys = [1.0, 2.0, INF, INF], [1.0, 2.0, 3.0, 4.0]
    assert kendall_tau(xs, ys) == pytest.approx(5 / math.sqrt(5 * 6))
    assert spearman(xs, ys) == spearman([1.0, 2.0, 3.0, 3.0], ys)


def test_constant_sides_and_short_inputs_are_nan_and_lengths_must_agree():
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(spearman([1.0], [2.0])) and math.isnan(kendall_tau([], []))
    with pytest.raises(RankError):
        spearman([1.0, 2.0], [1.0])
