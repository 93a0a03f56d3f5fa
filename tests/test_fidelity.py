"""`hnas fidelity` on hand-made studies whose rank correlations are known: between rungs (a study
with successive halving) and between learning-curve points and the final score (a plain study)."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from typer.testing import CliRunner

from nas.cli import app
from nas.fidelity import agreements
from nas.record import TaskRecord, TrainedResult, TrialRecord
from nas.rungs import Rungs
from nas.storage import open_storage
from nas.study import create_or_check

from test_halving import SPACE, sh_definition
from test_study import definition


def add(study, values, record: TrialRecord) -> None:
    study.add_trial(optuna.trial.create_trial(
        values=values, params={"x": 0}, distributions={"x": CategoricalDistribution([0])},
        user_attrs=record.to_user_attrs()))


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_rung_pairs_with_known_correlations(url):
    study, _ = create_or_check("sh", open_storage(url), sh_definition(n_trials=5))
    # rung 0 (1 step): candidates 0..4; rung 1 (3 steps): 0..3 in the order 1 3 2 4;
    # rung 2 (9 steps): two candidates only
    rung0 = {0: 1.0, 1: 2.0, 2: 3.0, 3: 4.0, 4: 5.0}
    rung1 = {0: 1.0, 1: 3.0, 2: 2.0, 3: 4.0}
    rung2 = {1: 0.5, 3: 0.7}
    for rung, table in enumerate((rung0, rung1, rung2)):
        for candidate, quality in table.items():
            add(study, [quality, 1000.0], TrialRecord(rung=rung, candidate=candidate))
    add(study, [9.0, 1000.0], TrialRecord(rung=0, candidate=9, duplicate_of=0))  # left out
    rows = agreements(study)
    assert [(r.low, r.high, r.objective, r.n) for r in rows] == [(1, 3, "quality", 4),
                                                                 (3, 9, "quality", 2)]
    # x = 1 2 3 4, y = 1 3 2 4: one swapped pair of six; sum d^2 = 2
    assert rows[0].spearman == pytest.approx(1 - 6 * 2 / (4 * 15))
    assert rows[0].kendall == pytest.approx((5 - 1) / 6)
    assert math.isnan(rows[1].spearman)  # two candidates are no evidence
    result = CliRunner().invoke(app, ["fidelity", "sh", "--storage", url, "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown[0]["n"] == 4 and shown[0]["spearman"] == pytest.approx(0.8)
    table = CliRunner().invoke(app, ["fidelity", "sh", "--storage", url])
    assert "rung against the next rung" in table.output and "+0.800" in table.output


def test_curve_points_against_the_final_score(url):
    study, _ = create_or_check("plain", open_storage(url), definition(SPACE, steps=30))
    weights = {"mqar_64x4": 1.0, "in_context_recall_64": 1.0}
    finals = [0.1, 0.2, 0.3, 0.4, 0.5]
    at_10 = [0.5, 0.4, 0.3, 0.2, 0.1]  # perfectly reversed at step 10
    at_20 = [0.1, 0.2, 0.3, 0.4, 0.5]  # perfectly in order at step 20
    for final, early, late in zip(finals, at_10, at_20):
        tasks = {name: TaskRecord(curve=[{"step": 10, "accuracy": early, "loss": 1 - early},
                                         {"step": 20, "accuracy": late, "loss": 1 - late},
                                         {"step": 30, "accuracy": final, "loss": 1 - final}])
                 for name in weights}
        add(study, [final, 1000.0], TrialRecord(result=TrainedResult(
            quality=final, loss=1 - final, tasks=tasks, device="cpu")))
    rows = {(r.objective, r.low): r for r in agreements(study)}
    assert set(rows) == {("quality", 10), ("quality", 20), ("loss", 10), ("loss", 20)}
    assert rows["quality", 10].spearman == pytest.approx(-1.0)
    assert rows["quality", 20].kendall == pytest.approx(1.0) and rows["quality", 20].n == 5
    assert rows["loss", 20].spearman == pytest.approx(1.0) and rows["loss", 20].high == 30
    result = CliRunner().invoke(app, ["fidelity", "plain", "--storage", url])
    assert result.exit_code == 0 and "learning-curve point against the final" in result.output


def test_fidelity_of_an_unknown_study_is_one_line(url):
    create_or_check("sh", open_storage(url), sh_definition(rungs=Rungs((1, 3, 9))))
    result = CliRunner().invoke(app, ["fidelity", "nope", "--storage", url])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_fidelity_json_is_strict_json_when_a_row_has_no_figures(url):
    study, _ = create_or_check("sh", open_storage(url), sh_definition(n_trials=5))
    for candidate, quality in enumerate((1.0, 2.0)):  # two candidates at both rungs: no figures
        for rung in (0, 1):
            add(study, [quality + rung, 1000.0], TrialRecord(rung=rung, candidate=candidate))
    result = CliRunner().invoke(app, ["fidelity", "sh", "--storage", url, "--json"])
    assert result.exit_code == 0, result.output

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")

    shown = json.loads(result.output, parse_constant=refuse)
    assert shown[0]["n"] == 2 and shown[0]["spearman"] is None and shown[0]["kendall"] is None


def test_a_plot_that_cannot_be_drawn_is_one_line(url, tmp_path):
    create_or_check("sh", open_storage(url), sh_definition(rungs=Rungs((1, 3, 9))))
    result = CliRunner().invoke(app, ["fidelity", "sh", "--storage", url, "--json",
                                      "--plot", str(tmp_path / "ranks.txt")])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1].startswith("error: ")
