"""PNG pictures (matplotlib, an optional extra imported on first use) of nas.plots.data's
records: the front (one objective: value against trial; two: the staircase; three or more: a
scatter matrix without lines), the front's learning curves, the fidelity rank panels."""

from __future__ import annotations

import math
from pathlib import Path

from nas.plots.data import (Axis, Curve, FrontData, Pair, PlotError, humane, log_scale,
                            nondominated_2d, staircase)
from nas.ranking import ranks

MARKERS = ("o", "s", "^", "D", "v", "P")  # one per rung


def pyplot():
    try:
        import matplotlib  # an optional extra (hybrid-nas[plots]), and slow to import

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("PNG plots need matplotlib: pip install 'hybrid-nas[plots]'") from None
    return plt


def save(figure, path: Path, plt) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def format_axis(axis, which: str, spec: Axis, values: list[float]) -> None:
    from matplotlib.ticker import FuncFormatter

    if log_scale(values):
        (axis.set_xscale if which == "x" else axis.set_yscale)("log")
    formatter = FuncFormatter(lambda value, _: humane(value, spec.unit))
    target = axis.xaxis if which == "x" else axis.yaxis
    target.set_major_formatter(formatter)
    if log_scale(values):
        target.set_minor_formatter(FuncFormatter(lambda *_: ""))


def plane(axis, data: FrontData, i: int, j: int, *, staircase_line: bool,
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
    format_axis(axis, "x", data.axes[i], [v[i] for v in every])
    format_axis(axis, "y", data.axes[j], [v[j] for v in every])


def front(data: FrontData, path: Path) -> None:
    plt = pyplot()
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
        format_axis(axis, "y", data.axes[0], ys)
        axis.legend(loc="best")
    elif count == 2:
        figure, axis = plt.subplots(figsize=(7, 5))
        plane(axis, data, 0, 1, staircase_line=True, labels=True)
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
                plane(axis, data, column, row, staircase_line=False,
                       labels=(row, column) == (1, 0))
                axis.tick_params(labelsize=7)
        grid[1][0].legend(fontsize=7, loc="best")
        figure.suptitle(data.title + " (every pair of objectives; front marked, no lines: a "
                        "3-D front is not a front in each plane)", fontsize=9)
        save(figure, path, plt)
        return
    axis.set_title(data.title, fontsize=10)
    save(figure, path, plt)


def curves(lines: list[Curve], title: str, path: Path) -> None:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(8, 5))
    for line in lines:
        axis.plot(line.steps, line.accuracies, marker=".", label=line.label)
    axis.set_xlabel("training step")
    axis.set_ylabel("test accuracy (curve points)")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7, loc="best")
    axis.grid(alpha=0.3)
    save(figure, path, plt)


def fidelity(panels: list[tuple[Pair, str]], study_name: str, path: Path) -> None:
    plt = pyplot()
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.8 * rows), squeeze=False)
    for axis, (panel, title) in zip(axes.flat, panels):
        axis.scatter(ranks(panel.low_values), ranks(panel.high_values), s=16)
        top = len(panel.low_values) - 1
        axis.plot([0, top], [0, top], color="0.6", linewidth=0.8)
        axis.set_xlabel(f"rank at {panel.low} steps")
        axis.set_ylabel("rank at " + ("the final score" if panel.high is None else
                                      f"{panel.high} steps"))
        axis.set_title(title, fontsize=8)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.suptitle(f"{study_name}: does the low budget rank as the high one?", fontsize=10)
    save(figure, path, plt)
