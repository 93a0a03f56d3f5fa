"""What a study's plots show, as plain records: the objectives' axes, the candidates and the
front at the shown rung, the staircase of a 2-D front, the curves of the front's trials and
the rank pairs of `hnas fidelity`; humane units and the log-axis rule. No plotting library is
imported here (nas.plots.png and nas.plots.html draw these records).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from optuna.trial import TrialState

from nas.definition import StudyDefinition
from nas.fidelity import Pair, pairs
from nas.record import TrialRecord, records_of
from nas.report import pareto_front, rung_label, shown_rung
from nas.rungs import nondominated_fronts
from search_spaces.errors import UserError

LOG_SPAN = 100.0  # values spanning this factor or more get a log axis


class PlotError(UserError):
    """A plot that cannot be drawn (unknown file type, plotting library missing, no data)."""


@dataclass
class Axis:
    name: str
    direction: str  # "maximize" or "minimize"

    @property
    def unit(self) -> str:
        """How the values read: bytes (binary prefixes), counts (K/M/G) or plain."""
        kind = self.name.split("@")[0]
        if kind == "cache":
            return "bytes"
        if kind in ("params", "active_params", "flops", "train_tokens_per_s"):
            return "count"
        return "plain"

    def label(self) -> str:
        arrow = "higher is better" if self.direction == "maximize" else "lower is better"
        return f"{self.name} ({arrow})"


@dataclass
class Point:
    trial: int
    values: tuple[float, ...]
    rung: int | None
    pattern: str
    baseline: str | None


@dataclass
class FrontData:
    title: str
    axes: list[Axis]
    shown: list[Point]  # the candidates compared (at the shown rung)
    front: list[Point]
    others: dict[int, list[Point]] = field(default_factory=dict)  # rung -> points (faded)
    rung_steps: dict[int, int] = field(default_factory=dict)


def front_data(study: Any, rung: int | None = None) -> FrontData:
    definition = StudyDefinition.from_attrs(study.user_attrs, study.study_name)
    objectives = definition.objective_list
    trials = study.get_trials(deepcopy=False)
    records = records_of(trials)  # parsed once, for the rung, the points and the front
    try:
        rung = shown_rung(study, trials, rung, records)
    except ValueError as error:
        raise PlotError(str(error)) from None
    points = []
    for trial in trials:
        record = records[trial.number]
        if trial.state == TrialState.COMPLETE and record.duplicate_of is None:
            points.append(Point(trial.number, tuple(trial.values), record.rung,
                                record.pattern or "", record.baseline))
    if not points:
        raise PlotError(f"study {study.study_name!r} has no complete trials to plot")
    front_numbers = {t.number for t in pareto_front(study, trials, rung=rung, records=records)}
    shown = [p for p in points if rung is None or (p.rung or 0) == rung]
    others: dict[int, list[Point]] = {}
    for p in points:
        if rung is not None and (p.rung or 0) != rung:
            others.setdefault(p.rung or 0, []).append(p)
    title = f"{study.study_name}: Pareto front"
    where = rung_label(study, rung)
    if where:
        title += f" at {where}"
    steps = dict(enumerate(definition.rungs.steps)) if definition.rungs else {}
    return FrontData(title, [Axis(o.name, o.direction) for o in objectives], shown,
                     [p for p in shown if p.trial in front_numbers], others, steps)


def staircase(front: list[tuple[float, float]], directions: tuple[str, str]
              ) -> list[tuple[float, float]]:
    """The boundary of the region dominated by a 2-D front: between two neighbours (sorted by
    x) the corner is the one worse than both in each objective."""
    pts = sorted(front)
    if len(pts) < 2:
        return pts
    worse = [min if d == "maximize" else max for d in directions]
    path = [pts[0]]
    for a, b in zip(pts, pts[1:]):
        path.append((worse[0](a[0], b[0]), worse[1](a[1], b[1])))
        path.append(b)
    return path


def nondominated_2d(points: list[Point], i: int, j: int,
                    directions: tuple[str, str]) -> list[Point]:
    """The points that are non-dominated in the plane of objectives i and j."""

    sign = [-1 if d == "maximize" else 1 for d in directions]
    fronts = nondominated_fronts([(sign[0] * p.values[i], sign[1] * p.values[j])
                                  for p in points])
    return [points[k] for k in fronts[0]] if fronts else []


def log_scale(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and len(values) > 1 and \
        max(positive) / min(positive) >= LOG_SPAN


def humane(value: float, unit: str) -> str:
    """1234567 -> 1.23M (counts), 1.18 MiB (bytes); plain numbers to 3 significant digits."""
    if unit == "bytes":
        for name, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value:.3g} B"
    if unit == "count":
        for name, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
            if abs(value) >= scale:
                return f"{value / scale:.3g}{name}"
    return f"{value:.3g}"


@dataclass
class Curve:
    label: str  # "trial N PATTERN / TASK"
    steps: list[int]
    accuracies: list[float]


def curves(study: Any, data: FrontData) -> list[Curve]:
    """Test accuracy against step for every task of every front trial that recorded a curve."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    found = []
    for point in data.front:
        record = TrialRecord.from_frozen_trial(by_number[point.trial])
        if record.result is None:
            continue
        for task, result in record.result.tasks.items():
            curve = [(p["step"], p["accuracy"]) for p in result.curve
                     if isinstance(p.get("step"), int) and "accuracy" in p]
            if curve:
                found.append(Curve(f"trial {point.trial} {point.pattern} / {task}",
                                   [s for s, _ in curve], [a for _, a in curve]))
    if not found:
        raise PlotError(f"study {study.study_name!r}: its front's trials have no learning-curve "
                        "points")
    return found


def fidelity_panels(study: Any) -> list[tuple[Pair, str]]:
    """Every (budget pair, objective) with two or more candidates measured at both, titled."""
    panels = [p for p in pairs(study) if len(p.low_values) >= 2]
    if not panels:
        raise PlotError(f"study {study.study_name!r}: no pair of budgets with two candidates "
                        "measured at both")
    return [(p, f"{p.objective}: {p.low} -> {'final' if p.high is None else p.high} steps "
                f"(n={len(p.low_values)}, rho={p.agreement.spearman:+.2f})") for p in panels]
