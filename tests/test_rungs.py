"""The successive-halving core (nas.rungs): rung specs, non-dominated sorting, crowding distance,
the promotion order on hand-built fronts and the asynchronous promotion decision."""

from __future__ import annotations

import math

import pytest

from nas.rungs import (
    RungError,
    Rungs,
    crowding_distances,
    never_promoted,
    next_promotion,
    nondominated_fronts,
    parse_rungs,
    promotable,
    promotion_order,
)

# -- specs ---------------------------------------------------------------------------------------


def test_rungs_from_a_list_and_from_a_minimum_and_a_factor():
    assert parse_rungs("100,300,900").steps == (100, 300, 900)
    assert parse_rungs("100, 300,900", eta=2).eta == 2
    assert parse_rungs(min_steps=100, eta=3, max_steps=900) == Rungs((100, 300, 900), 3)
    # the budget is the top rung whatever the ratio: each rung is the next one over eta
    assert parse_rungs(min_steps=100, eta=3, max_steps=1000).steps == (111, 333, 1000)
    assert parse_rungs(min_steps=50, eta=2, max_steps=200).steps == (50, 100, 200)
    assert parse_rungs(min_steps=100, max_steps=300).steps == (100, 300)


@pytest.mark.parametrize("kwargs, message", [
    ({"rungs": "100,abc"}, "entry 1 ('abc') is not a whole number"),
    ({"rungs": "300,100"}, "budgets must increase, but budget 1 (100) is not above budget 0"),
    ({"rungs": "100,100"}, "budgets must increase"),
    ({"rungs": "100"}, "at least two budgets"),
    ({"rungs": "0,100"}, "budget 0 is 0"),
    ({"rungs": "100,,300"}, "entry 1 ('') is not a whole number"),
    ({"rungs": "100,300", "max_steps": 900}, "the last rung is the full budget"),
    ({"rungs": "100,300", "min_steps": 10}, "give one of them, not both"),
    ({"rungs": "100,300", "eta": 1}, "--eta 1: expected a whole number >= 2"),
    ({}, "give --rungs"),
    ({"min_steps": 0, "max_steps": 100}, "--min-steps 0"),
    ({"min_steps": 100, "max_steps": 100}, "must be below the full budget"),
    ({"min_steps": 100, "max_steps": 200, "eta": 3}, "fewer than two distinct rungs"),
    ({"min_steps": 100, "max_steps": 299}, "fewer than two distinct rungs"),
])
def test_bad_rung_specs_are_one_line_errors(kwargs, message):
    with pytest.raises(RungError) as caught:
        parse_rungs(**kwargs)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_rungs_round_trip_and_reject_damaged_attributes():
    rungs = Rungs((10, 30, 90), 3)
    assert Rungs.from_dict(rungs.to_dict()) == rungs
    for damaged in ({"kind": "hb", "rungs": [1, 2]}, {"kind": "sh", "rungs": "1,2"},
                    {"kind": "sh", "rungs": [5, 2]}, {"kind": "sh", "rungs": [1, 2], "eta": 1.5}):
        with pytest.raises(RungError):
            Rungs.from_dict(damaged)


# -- ranking -------------------------------------------------------------------------------------


def test_nondominated_fronts_of_a_hand_built_set():
    # (minimised) 0,1,2 are the front; 3 is dominated by 1 only; 4 by 3; 5 equals 1
    points = [(1, 5), (2, 2), (5, 1), (3, 3), (4, 4), (2, 2)]
    assert nondominated_fronts(points) == [[0, 1, 2, 5], [3], [4]]


def test_a_point_on_the_front_only_through_its_third_objective():
    # in the first two objectives point 2 is dominated by point 1; its third keeps it on the front
    points = [(1, 3, 5), (2, 2, 5), (3, 3, 1), (3, 3, 6)]
    assert nondominated_fronts(points) == [[0, 1, 2], [3]]


def test_crowding_distance_favours_the_ends_and_sparse_parts():
    front = [(0, 10), (1, 9), (2, 8), (6, 4), (10, 0)]
    distance = crowding_distances(front)
    assert math.isinf(distance[0]) and math.isinf(distance[4])
    # (1,9): neighbours (0,10),(2,8) -> 2/10 + 2/10; (2,8): (1,9),(6,4) -> 5/10 + 5/10;
    # (6,4): (2,8),(10,0) -> 8/10 + 8/10
    assert distance[1:4] == pytest.approx([0.4, 1.0, 1.6])


def test_promotion_order_front_then_crowding_then_arrival():
    points = [(3, 3), (0, 10), (1, 9), (2, 8), (6, 4), (10, 0), None, (math.nan, 1)]
    # front: 1..5 (point 0 is dominated by (2, 8)? no: 3 > 2 but 3 < 8; it is on the front)
    order = promotion_order(points)
    assert order[:2] == [1, 5]  # the two ends, in arrival order
    assert set(order[:6]) == {0, 1, 2, 3, 4, 5}
    assert order[-2:] == [6, 7]  # failed and non-finite last
    # a dominated point never precedes a front point however sparse its neighbourhood
    assert promotion_order([(5, 5), (1, 1), (0, 2)]) == [1, 2, 0]


def test_top_third_is_promoted_once():
    results = {10: (1.0, 1.0), 11: (2.0, 2.0), 12: (3.0, 3.0), 13: (0.5, 4.0), 14: (4.0, 4.0),
               15: (5.0, 5.0), 16: None}
    # 7 measured -> floor(7/3) = 2 promotable: the front {10, 13} (both ends)
    assert promotable(results, set(), 3) == [10, 13]
    assert promotable(results, {10}, 3) == [13]
    assert promotable(results, {10, 13}, 3) == []
    assert promotable({1: (1.0,), 2: (2.0,)}, set(), 3) == []  # fewer than eta: nobody yet


def test_asynchronous_decision_prefers_the_highest_rung_and_samples_otherwise():
    rungs = Rungs((1, 3, 9), 2)
    rung0 = {0: (1.0, 1.0), 1: (2.0, 2.0), 2: (3.0, 3.0), 3: (4.0, 4.0)}
    rung1 = {0: (1.0, 1.0), 1: (2.0, 2.0)}
    assert next_promotion(rungs, [rung0, rung1], [{0, 1}, set()]) == (1, 0)
    assert next_promotion(rungs, [rung0, rung1], [{0, 1}, {0}]) is None
    assert next_promotion(rungs, [rung0], [set()]) == (0, 0)
    assert next_promotion(rungs, [rung0], [{0}]) == (0, 1)
    assert next_promotion(rungs, [rung0], [{0, 1}]) is None  # -> sample a new candidate
    # the top rung never promotes
    assert next_promotion(rungs, [{}, {}, {0: (0.0, 0.0), 1: (1.0, 1.0)}], [set()] * 3) is None


def test_a_simulated_asynchronous_run_promotes_each_candidate_at_most_once():
    """Feed candidates one by one into rung 0 and let the decision run to the end."""
    import random

    rungs = Rungs((1, 3, 9), 3)
    generator = random.Random(0)
    truth = {c: (generator.random(), generator.random()) for c in range(27)}
    results: list[dict] = [{}, {}, {}]
    promoted: list[set] = [set(), set(), set()]
    new = iter(range(27))
    for _ in range(200):
        decision = next_promotion(rungs, results, promoted)
        if decision is None:
            candidate = next(new, None)
            if candidate is None:
                break
            results[0][candidate] = truth[candidate]
            continue
        rung, candidate = decision
        assert candidate not in promoted[rung]
        # promoted only from the top floor(n / eta) of its rung as it stood at that moment
        measured = sorted(results[rung])
        top = promotion_order([results[rung][c] for c in measured])[:len(measured) // 3]
        assert candidate in {measured[k] for k in top}
        promoted[rung].add(candidate)
        results[rung + 1][candidate] = truth[candidate]
    assert len(results[0]) == 27
    assert set(results[2]) <= set(results[1])
    # when it ends, each rung's final top third has been promoted (asynchronous promotion may
    # also have promoted early leaders that fell back later: ASHA's known price for never waiting)
    for rung in (0, 1):
        measured = sorted(results[rung])
        top = promotion_order([results[rung][c] for c in measured])[:len(measured) // 3]
        assert {measured[k] for k in top} <= promoted[rung]
    assert 9 <= len(results[1]) < 27 and len(results[2]) >= 3


def test_the_core_imports_neither_torch_nor_optuna():
    import subprocess
    import sys

    code = ("import sys\n"
            "sys.modules['torch'] = sys.modules['optuna'] = None  # any import now fails\n"
            "import nas.rungs, nas.ranking\n"
            "print(nas.rungs.promotion_order([(1, 2), (0, 3)]), nas.ranking.spearman([1, 2], [2, 3]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[0,", "1]", "1.0"]


# -- which candidates no promotion will take (their checkpoints can go) --------------------------


def test_an_open_rung_rules_out_only_candidates_with_enough_dominators():
    rungs = Rungs((1, 3), 3)
    results = [{0: (0.0, 0.0), 1: (1.0, 1.0), 2: (2.0, 2.0), 3: (0.5, 3.0), 4: None}, {}]
    # At most 9 candidates will be measured at rung 0, so at most 3 promoted: 2 (dominated by
    # 0 and 1 only) may still be among them, as may 3; a failed candidate never is.
    assert never_promoted(rungs, results, [set(), set()], capacity=9) == [{4}]
    # With at most 6, at most 2 are promoted: 2 is behind two dominators for good, 3 is not.
    assert never_promoted(rungs, results, [set(), set()], capacity=6) == [{2, 4}]
    # A candidate whose promotion is claimed or measured is never ruled out.
    assert never_promoted(rungs, results, [{2}, set()], capacity=6) == [{4}]


def test_a_closed_rung_keeps_its_top_and_its_promotions_only():
    rungs = Rungs((1, 2, 4), 2)
    points = {0: (0.0, 0.0), 1: (1.0, 1.0), 2: (2.0, 2.0), 3: (3.0, 0.5)}
    # Rung 0 has its 4 candidates: its top 2 are 0 and 3 (front 0's ends), and 1 was
    # promoted earlier (when it was in the top); 2 is out. Rung 1 still waits for 3.
    results = [points, {0: (0.0, 0.0), 1: (1.0, 1.0)}, {}]
    out = never_promoted(rungs, results, [{0, 1, 3}, set(), set()], capacity=4)
    assert out[0] == {2}
    # rung 1 will hold 0, 1 and 3 at most, so it promotes one: 1, behind 0, is out already,
    # while 0 is not (3, still to come, may yet beat it)
    assert out[1] == {1}
    # once 3 is measured there, rung 1 is final: its top 1 is 0, so 1 and 3 are out
    results[1][3] = (3.0, 3.0)
    assert never_promoted(rungs, results, [{0, 1, 3}, set(), set()], capacity=4)[1] == {1, 3}
