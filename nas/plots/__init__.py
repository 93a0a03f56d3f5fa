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

    data.py   what a plot shows, as records (no plotting library)
    png.py    matplotlib drawing          html.py   plotly drawing
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.plots import html, png
from nas.plots.data import (Axis, Curve, FrontData, PlotError, Point, curves,  # noqa: F401
                            fidelity_panels, front_data, humane, log_scale, nondominated_2d,
                            staircase)


def _target(path: str | Path, option: str = "--plot") -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".png", ".html"):
        raise PlotError(f"{option} {str(path)!r}: give a .png or .html file")
    if not path.parent.exists():
        raise PlotError(f"{option} {str(path)!r}: folder {str(path.parent)!r} does not exist")
    return path


def _drawer(path: Path):
    return png if path.suffix.lower() == ".png" else html


def plot_front(study: Any, path: str | Path, rung: int | None = None) -> Path:
    path = _target(path)
    _drawer(path).front(front_data(study, rung), path)
    return path


def plot_curves(study: Any, path: str | Path, rung: int | None = None) -> Path:
    """Test accuracy against step, one line per front trial and task."""
    path = _target(path, "--curves")
    data = front_data(study, rung)
    title = data.title.replace("Pareto front", "learning curves of the front")
    _drawer(path).curves(curves(study, data), title, path)
    return path


def plot_fidelity(study: Any, path: str | Path) -> Path:
    """One panel per (rung pair or curve point, objective): ranks at low against high."""
    path = _target(path)
    _drawer(path).fidelity(fidelity_panels(study), study.study_name, path)
    return path
