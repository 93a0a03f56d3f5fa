"""Pictures of a study: the front, the learning curves of the front's trials, the fidelity ranks.

PNG (matplotlib) or interactive HTML (plotly), chosen by the file's suffix.

    front, 1 objective     the value against the trial number, the best so far as a step line
    front, 2 objectives    every candidate, the front as the staircase that bounds the region it
                           dominates (only points that are non-dominated in this plane)
    front, 3+ objectives   a scatter matrix: every pair of objectives, front points marked, no
                           lines (a front in three objectives is not a front in each plane)
    curves                 test accuracy against step for each front trial's tasks
    fidelity               the ranks at one rung (or curve point) against the next, per pair

Axes carry humane units (parameters and FLOPs in K/M/G, bytes in KiB/MiB/GiB) and are
logarithmic when an objective's values span two decades or more. Baselines are labelled stars.
In a study with rungs the front is the one at the shown rung (nas.report.shown_rung) and the
candidates measured at other rungs are drawn faded, one marker per rung.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from nas.definition import StudyDefinition
from nas.fidelity import pairs
from nas.ranking import ranks
from nas.record import TrialRecord
from nas.report import pareto_front, rung_label, shown_rung
from nas.rungs import nondominated_fronts
from search_spaces.errors import UserError

MARKERS = ("o", "s", "^", "D", "v", "P")  # one per rung
PLOTLY_MARKERS = ("circle", "square", "triangle-up", "diamond", "triangle-down", "cross")
LOG_SPAN = 100.0  # values spanning this factor or more get a log axis


class PlotError(UserError):
    """A plot that cannot be drawn (unknown file type, plotting library missing)."""


# -- data ---------------------------------------------------------------------------------------


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
    try:
        rung = shown_rung(study, trials, rung)
    except ValueError as error:
        raise PlotError(str(error)) from None
    points = []
    for trial in trials:
        record = TrialRecord.from_frozen_trial(trial)
        if trial.state == TrialState.COMPLETE and record.duplicate_of is None:
            points.append(Point(trial.number, tuple(trial.values), record.rung,
                                record.pattern or "", record.baseline))
    if not points:
        raise PlotError(f"study {study.study_name!r} has no complete trials to plot")
    front_numbers = {t.number for t in pareto_front(study, trials, rung=rung)}
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


# -- entry points -------------------------------------------------------------------------------


def _target(path: str | Path, option: str = "--plot") -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".png", ".html"):
        raise PlotError(f"{option} {str(path)!r}: give a .png or .html file")
    if not path.parent.exists():
        raise PlotError(f"{option} {str(path)!r}: folder {str(path.parent)!r} does not exist")
    return path


def plot_front(study: Any, path: str | Path, rung: int | None = None) -> Path:
    path = _target(path)
    data = front_data(study, rung)
    if path.suffix.lower() == ".png":
        _front_png(data, path)
    else:
        _front_html(data, path)
    return path


def plot_curves(study: Any, path: str | Path, rung: int | None = None) -> Path:
    """Test accuracy against step, one line per front trial and task."""
    path = _target(path, "--curves")
    data = front_data(study, rung)
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    lines = []  # (label, steps, accuracies)
    for point in data.front:
        record = TrialRecord.from_frozen_trial(by_number[point.trial])
        if record.result is None:
            continue
        for task, result in record.result.tasks.items():
            curve = [(p["step"], p["accuracy"]) for p in result.curve
                     if isinstance(p.get("step"), int) and "accuracy" in p]
            if curve:
                lines.append((f"trial {point.trial} {point.pattern} / {task}",
                              [s for s, _ in curve], [a for _, a in curve]))
    if not lines:
        raise PlotError(f"study {study.study_name!r}: its front's trials have no learning-curve "
                        "points")
    title = data.title.replace("Pareto front", "learning curves of the front")
    if path.suffix.lower() == ".png":
        plt = _pyplot()
        figure, axis = plt.subplots(figsize=(8, 5))
        for label, xs, ys in lines:
            axis.plot(xs, ys, marker=".", label=label)
        axis.set_xlabel("training step")
        axis.set_ylabel("test accuracy (curve points)")
        axis.set_title(title, fontsize=10)
        axis.legend(fontsize=7, loc="best")
        axis.grid(alpha=0.3)
        _save(figure, path, plt)
    else:
        go = _plotly()
        figure = go.Figure()
        for label, xs, ys in lines:
            figure.add_scatter(x=xs, y=ys, mode="lines+markers", name=label)
        figure.update_layout(title=title, xaxis_title="training step",
                             yaxis_title="test accuracy (curve points)")
        figure.write_html(path, include_plotlyjs=True)
    return path


def plot_fidelity(study: Any, path: str | Path) -> Path:
    """One panel per (rung pair or curve point, objective): ranks at low against high."""

    path = _target(path)
    panels = [p for p in pairs(study) if len(p.low_values) >= 2]
    if not panels:
        raise PlotError(f"study {study.study_name!r}: no pair of budgets with two candidates "
                        "measured at both")
    titles = [f"{p.objective}: {p.low} -> {'final' if p.high is None else p.high} steps "
              f"(n={len(p.low_values)}, rho={p.agreement.spearman:+.2f})" for p in panels]
    if path.suffix.lower() == ".png":
        plt = _pyplot()
        columns = min(3, len(panels))
        rows = math.ceil(len(panels) / columns)
        figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.8 * rows),
                                    squeeze=False)
        for axis, panel, title in zip(axes.flat, panels, titles):
            axis.scatter(ranks(panel.low_values), ranks(panel.high_values), s=16)
            top = len(panel.low_values) - 1
            axis.plot([0, top], [0, top], color="0.6", linewidth=0.8)
            axis.set_xlabel(f"rank at {panel.low} steps")
            axis.set_ylabel("rank at " + ("the final score" if panel.high is None else
                                          f"{panel.high} steps"))
            axis.set_title(title, fontsize=8)
        for axis in list(axes.flat)[len(panels):]:
            axis.set_visible(False)
        figure.suptitle(f"{study.study_name}: does the low budget rank as the high one?",
                        fontsize=10)
        _save(figure, path, plt)
    else:
        go = _plotly()
        from plotly.subplots import make_subplots

        figure = make_subplots(rows=len(panels), cols=1, subplot_titles=titles)
        for index, panel in enumerate(panels, 1):
            figure.add_scatter(x=ranks(panel.low_values), y=ranks(panel.high_values),
                               mode="markers", row=index, col=1, showlegend=False,
                               text=[f"trial {n}" for n in panel.trials])
        figure.update_layout(height=350 * len(panels),
                             title=f"{study.study_name}: ranks at the low budget vs the high")
        figure.write_html(path, include_plotlyjs=True)
    return path


# -- matplotlib ---------------------------------------------------------------------------------


def _pyplot():
    try:
        import matplotlib  # an optional extra (hybrid-nas[plots]), and slow to import

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("PNG plots need matplotlib: pip install 'hybrid-nas[plots]'") from None
    return plt


def _save(figure, path: Path, plt) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _format_axis(axis, which: str, spec: Axis, values: list[float]) -> None:
    from matplotlib.ticker import FuncFormatter

    if log_scale(values):
        (axis.set_xscale if which == "x" else axis.set_yscale)("log")
    formatter = FuncFormatter(lambda value, _: humane(value, spec.unit))
    target = axis.xaxis if which == "x" else axis.yaxis
    target.set_major_formatter(formatter)
    if log_scale(values):
        target.set_minor_formatter(FuncFormatter(lambda *_: ""))


def _plane(axis, data: FrontData, i: int, j: int, *, staircase_line: bool,
           labels: bool) -> None:
    """Objectives i (x) and j (y) on one axis: other rungs faded, the compared candidates,
    the front (with its staircase when asked and meaningful), baselines."""
    for rung, points in sorted(data.others.items()):
        axis.scatter([p.values[i] for p in points], [p.values[j] for p in points], s=12,
                     marker=MARKERS[rung % len(MARKERS)], color="0.8",
                     label=f"rung {rung} ({data.rung_steps.get(rung)} steps)" if labels else None)
    shown_label = "candidates" if not data.rung_steps else "candidates at this rung"
    axis.scatter([p.values[i] for p in data.shown], [p.values[j] for p in data.shown], s=16,
                 color="0.45", label=shown_label if labels else None)
    directions = (data.axes[i].direction, data.axes[j].direction)
    front = data.front if staircase_line else nondominated_2d(data.front, i, j, directions)
    axis.scatter([p.values[i] for p in data.front], [p.values[j] for p in data.front], s=34,
                 color="tab:blue", zorder=3, label="Pareto front" if labels else None)
    if staircase_line and len(front) > 1:
        path = staircase([(p.values[i], p.values[j]) for p in front], directions)
        axis.plot([x for x, _ in path], [y for _, y in path], color="tab:blue", linewidth=1.2)
    for p in data.shown:
        if p.baseline:
            axis.scatter([p.values[i]], [p.values[j]], marker="*", s=170, color="tab:red",
                         zorder=4)
            axis.annotate(p.baseline, (p.values[i], p.values[j]), textcoords="offset points",
                          xytext=(6, 6), fontsize=8)
    every = [p.values for p in data.shown] + [p.values for ps in data.others.values()
                                              for p in ps]
    _format_axis(axis, "x", data.axes[i], [v[i] for v in every])
    _format_axis(axis, "y", data.axes[j], [v[j] for v in every])


def _front_png(data: FrontData, path: Path) -> None:
    plt = _pyplot()
    count = len(data.axes)
    if count == 1:
        figure, axis = plt.subplots(figsize=(7, 5))
        ordered = sorted(data.shown, key=lambda p: p.trial)
        xs, ys = [p.trial for p in ordered], [p.values[0] for p in ordered]
        pick = max if data.axes[0].direction == "maximize" else min
        best = [pick(ys[:k + 1]) for k in range(len(ys))]
        axis.scatter(xs, ys, color="0.5", s=14, label="trials")
        axis.step(xs, best, where="post", color="tab:blue", label="best so far")
        axis.set_xlabel("trial")
        axis.set_ylabel(data.axes[0].label())
        _format_axis(axis, "y", data.axes[0], ys)
        axis.legend(loc="best")
    elif count == 2:
        figure, axis = plt.subplots(figsize=(7, 5))
        _plane(axis, data, 0, 1, staircase_line=True, labels=True)
        axis.set_xlabel(data.axes[0].label())
        axis.set_ylabel(data.axes[1].label())
        axis.legend(loc="best", fontsize=8)
    else:
        figure, grid = plt.subplots(count, count, figsize=(3.2 * count, 3.0 * count),
                                    squeeze=False)
        for row in range(count):
            for column in range(count):
                axis = grid[row][column]
                if row == column:
                    axis.axis("off")
                    axis.text(0.5, 0.5, data.axes[row].label().replace(" (", "\n("),
                              ha="center", va="center", fontsize=9, transform=axis.transAxes)
                    continue
                _plane(axis, data, column, row, staircase_line=False,
                       labels=(row, column) == (1, 0))
                axis.tick_params(labelsize=7)
        grid[1][0].legend(fontsize=7, loc="best")
        figure.suptitle(data.title + " (every pair of objectives; front marked, no lines: a "
                        "3-D front is not a front in each plane)", fontsize=9)
        _save(figure, path, plt)
        return
    axis.set_title(data.title, fontsize=10)
    _save(figure, path, plt)


# -- plotly -------------------------------------------------------------------------------------


def _plotly():
    try:
        import plotly.graph_objects as go  # an optional extra (hybrid-nas[plots])
    except ImportError:
        raise PlotError("HTML plots need plotly: pip install 'hybrid-nas[plots]'") from None
    return go


def _hover(points: list[Point], data: FrontData) -> list[str]:
    return [f"trial {p.trial}: {p.pattern}<br>" + "<br>".join(
        f"{a.name} {humane(v, a.unit)}" for a, v in zip(data.axes, p.values)) for p in points]


def _front_html(data: FrontData, path: Path) -> None:
    go = _plotly()
    figure = go.Figure()
    count = len(data.axes)
    if count == 1:
        ordered = sorted(data.shown, key=lambda p: p.trial)
        figure.add_scatter(x=[p.trial for p in ordered], y=[p.values[0] for p in ordered],
                           mode="markers", name="trials", text=_hover(ordered, data))
        figure.update_layout(xaxis_title="trial", yaxis_title=data.axes[0].label())
    elif count == 2:
        for rung, points in sorted(data.others.items()):
            figure.add_scatter(x=[p.values[0] for p in points], y=[p.values[1] for p in points],
                               mode="markers", name=f"rung {rung} ({data.rung_steps.get(rung)} "
                               "steps)", marker={"color": "lightgrey",
                                                 "symbol": PLOTLY_MARKERS[rung % 6]},
                               text=_hover(points, data))
        figure.add_scatter(x=[p.values[0] for p in data.shown],
                           y=[p.values[1] for p in data.shown], mode="markers",
                           name="candidates", marker={"color": "grey"},
                           text=_hover(data.shown, data))
        path_xy = staircase([(p.values[0], p.values[1]) for p in data.front],
                            (data.axes[0].direction, data.axes[1].direction))
        figure.add_scatter(x=[x for x, _ in path_xy], y=[y for _, y in path_xy],
                           mode="lines", name="front (staircase)", line={"color": "royalblue"})
        figure.add_scatter(x=[p.values[0] for p in data.front],
                           y=[p.values[1] for p in data.front], mode="markers",
                           name="Pareto front", marker={"color": "royalblue", "size": 9},
                           text=_hover(data.front, data))
        every = [p.values for p in data.shown]
        figure.update_layout(
            xaxis={"title": data.axes[0].label(),
                   "type": "log" if log_scale([v[0] for v in every]) else "linear"},
            yaxis={"title": data.axes[1].label(),
                   "type": "log" if log_scale([v[1] for v in every]) else "linear"})
    else:
        front = {p.trial for p in data.front}
        figure.add_trace(go.Splom(
            dimensions=[{"label": a.name, "values": [p.values[k] for p in data.shown]}
                        for k, a in enumerate(data.axes)],
            text=_hover(data.shown, data), showupperhalf=False, diagonal_visible=False,
            marker={"color": ["royalblue" if p.trial in front else "lightgrey"
                              for p in data.shown], "size": 7}))
    baselines = [p for p in data.shown if p.baseline]
    if baselines and count == 2:
        figure.add_scatter(x=[p.values[0] for p in baselines], y=[p.values[1] for p in baselines],
                           mode="markers+text", text=[p.baseline for p in baselines],
                           name="baselines", textposition="top center",
                           marker={"symbol": "star", "size": 14, "color": "crimson"})
    figure.update_layout(title=data.title)
    figure.write_html(path, include_plotlyjs=True)
