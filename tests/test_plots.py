"""Pictures of a study (nas.plots): the staircase front in two objectives, the scatter matrix
without lines in three, humane units and log axes, rungs told apart, curves and fidelity ranks,
as PNG and HTML."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

import nas.plots as plots
from nas.plots import humane, log_scale, nondominated_2d, staircase
from nas.record import TaskRecord, TrainedResult, TrialRecord
from nas.storage import open_storage
from nas.study import create_or_check

from test_halving import SPACE, sh_definition
from test_study import definition


def test_staircase_corners_are_worse_than_both_neighbours():
    # quality up, params down: the dominated region lies left of and above the front
    front = [(0.2, 10.0), (0.5, 30.0), (0.4, 20.0)]
    assert staircase(front, ("maximize", "minimize")) == [
        (0.2, 10.0), (0.2, 20.0), (0.4, 20.0), (0.4, 30.0), (0.5, 30.0)]
    # both minimised: the corners are up and to the right
    assert staircase([(1, 3), (2, 1)], ("minimize", "minimize")) == [(1, 3), (2, 3), (2, 1)]
    assert staircase([(1, 3)], ("minimize", "minimize")) == [(1, 3)]


def test_a_point_on_the_front_only_through_a_third_objective_is_not_a_2d_front_point():
    points = [plots.Point(0, (0.9, 100.0, 5.0), None, "a", None),
              plots.Point(1, (0.5, 200.0, 1.0), None, "b", None),  # dominated in the plane
              plots.Point(2, (0.3, 50.0, 9.0), None, "c", None)]
    kept = nondominated_2d(points, 0, 1, ("maximize", "minimize"))
    assert [p.trial for p in kept] == [0, 2]


def test_humane_units_and_log_axes():
    assert humane(1_234_567, "count") == "1.23M" and humane(12_000, "count") == "12K"
    assert humane(3 * 2**20, "bytes") == "3 MiB" and humane(512, "bytes") == "512 B"
    assert humane(0.0812, "plain") == "0.0812"
    assert log_scale([1e3, 5e5]) and not log_scale([10.0, 500.0]) and not log_scale([0.0, 1e6])


def add(study, values, record: TrialRecord) -> None:
    study.add_trial(optuna.trial.create_trial(
        values=values, params={"x": 0}, distributions={"x": CategoricalDistribution([0])},
        user_attrs=record.to_user_attrs()))


def capture(monkeypatch):
    """The matplotlib figure a plot function saves."""
    seen = {}
    real = plots.png.save

    def save(figure, path, plt):
        seen["figure"] = figure
        real(figure, path, plt)

    monkeypatch.setattr(plots.png, "save", save)
    return seen


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_three_objectives_draw_a_scatter_matrix_without_lines(url, tmp_path, monkeypatch):
    study, _ = create_or_check("three", open_storage(url),
                               definition(SPACE, objectives="quality,params,cache@1024"))
    for number, values in enumerate([(0.9, 1e5, 4e6), (0.5, 2e5, 1e3), (0.3, 5e4, 9e6),
                                     (0.2, 3e5, 8e6)]):
        add(study, list(values), TrialRecord(pattern=f"p{number}",
                                             baseline="jamba" if number == 3 else None))
    seen = capture(monkeypatch)
    plots.plot_front(study, tmp_path / "front.png")
    axes = [a for a in seen["figure"].axes if a.axison]
    assert len(axes) == 6  # every ordered pair of three objectives, the diagonal is text
    assert all(len(a.get_lines()) == 0 for a in axes)
    cache_axes = [a for a in axes if a.get_yscale() == "log"]
    assert cache_axes, "cache spans four decades: a log axis"
    assert (tmp_path / "front.png").stat().st_size > 10_000
    plots.plot_front(study, tmp_path / "front.html")
    assert "Splom" in (tmp_path / "front.html").read_text()[-20_000:] or \
        "splom" in (tmp_path / "front.html").read_text()[-20_000:]


def test_two_objectives_with_rungs_staircase_and_curves(url, tmp_path, monkeypatch):
    study, _ = create_or_check("sh", open_storage(url), sh_definition(n_trials=6))
    curve = [{"step": 1, "accuracy": 0.1, "loss": 2.0}, {"step": 3, "accuracy": 0.3, "loss": 1.5}]
    tasks = {"mqar_64x4": TaskRecord(curve=curve)}
    for candidate, (q0, p) in enumerate([(0.1, 1e4), (0.2, 2e4), (0.3, 4e4), (0.15, 3e4)]):
        add(study, [q0, p], TrialRecord(rung=0, candidate=candidate))
        if candidate < 3:
            add(study, [q0 + 0.3, p], TrialRecord(
                rung=1, candidate=candidate, pattern=f"c{candidate}",
                result=TrainedResult(quality=q0 + 0.3, tasks=tasks, device="cpu")))
    seen = capture(monkeypatch)
    plots.plot_front(study, tmp_path / "front.png")
    axis = seen["figure"].axes[0]
    assert "rung 1 of 0-2 (3 steps)" in axis.get_title()
    lines = axis.get_lines()
    assert len(lines) == 1  # the staircase through the front at rung 1
    assert list(lines[0].get_xdata()) == pytest.approx([0.4, 0.4, 0.5, 0.5, 0.6])
    labels = [t.get_text() for t in axis.get_legend().get_texts()]
    assert "rung 0 (1 steps)" in labels and "Pareto front" in labels
    plots.plot_curves(study, tmp_path / "curves.png")
    assert len(seen["figure"].axes[0].get_lines()) == 3  # one per front trial and task
    plots.plot_curves(study, tmp_path / "curves.html")
    plots.plot_fidelity(study, tmp_path / "fidelity.png")
    assert (tmp_path / "fidelity.png").stat().st_size > 5_000
    with pytest.raises(plots.PlotError, match="give a .png or .html file"):
        plots.plot_curves(study, tmp_path / "curves.svg")
