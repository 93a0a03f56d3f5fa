"""The replay benchmark's simulation (benchmarks/replay_sim.py) on a synthetic table: the
hypervolume, the compute cap, and successive halving's schedule."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.replay import SPACE, space_architectures  # noqa: E402
from benchmarks.replay_sim import Arch, at, hypervolume, load_table, simulate  # noqa: E402
from nas.rungs import Rungs  # noqa: E402


def test_hypervolume_of_a_hand_made_front():
    # quality up, params down, reference (0, 1): the boxes [0, 0.5] x [0.4, 1] and
    # [0, 0.8] x [0.8, 1] overlap in [0, 0.5] x [0.8, 1]
    assert hypervolume([(0.5, 0.4), (0.8, 0.8)]) == pytest.approx(0.3 + 0.16 - 0.1)
    assert hypervolume([(0.5, 0.4), (0.4, 0.5)]) == pytest.approx(0.5 * 0.6)  # dominated
    assert hypervolume([(0.0, 0.1), (0.5, 1.0)]) == 0.0  # on the reference point's edges


def test_load_table_keeps_whole_curves_in_recording_order():
    rows = [{"fingerprint": fp, "pattern": fp, "steps": s, "quality": 0.1, "params": 10,
             "train_seconds": 1.0} for fp in ("a", "b", "c") for s in (1, 3)]
    assert list(load_table(rows[:-1], (1, 3))) == ["a", "b"]
    assert list(load_table(rows, (1, 3), limit=1)) == ["a"]


@pytest.mark.parametrize("strategy", ["random-full", "sh-random", "sh-nsga2"])
def test_simulated_searches_respect_the_cap_and_the_schedule(strategy):
    from search_spaces import load_space

    archs = space_architectures()[:18]
    table = {a.fingerprint(): Arch(a.fingerprint(), a.pattern, (i + 1) / 18,
                                   {1: i / 40, 3: i / 30, 9: i / 20}, 1.0)
             for i, a in enumerate(archs)}
    rungs = Rungs((1, 3, 9), 3)
    curve = simulate(table, strategy, rungs, workers=2, seed=0, compute_cap=60.0,
                     space=load_space(str(SPACE)))
    spent = [c for c, _ in curve]
    assert spent == sorted(spent) and spent[-1] <= 60.0 + 9.0  # jobs started under the cap
    values = [hv for _, hv in curve]
    assert values == sorted(values)  # more measured candidates never shrink the front
    assert at(curve, spent[-1]) == values[-1] > 0
