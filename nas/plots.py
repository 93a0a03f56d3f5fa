"""Drawing a study's Pareto front with the baselines marked: PNG (matplotlib) or HTML (plotly).

The first two objectives are the axes (a single-objective study is drawn against the trial
number). Every complete trial is a grey point, the front is joined in order, and each baseline
preset is a labelled marker, so one glance says whether the search beat Jamba or Griffin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from nas.record import TrialRecord


class PlotError(ValueError):
    """A plot that cannot be drawn (unknown file type, plotting library missing)."""


def _points(study: Any) -> dict[str, Any]:
    from nas.report import objectives_of, pareto_front

    objectives = objectives_of(study)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise PlotError(f"study {study.study_name!r} has no complete trials to plot")

    def xy(trials):
        if len(objectives) == 1:
            return [t.number for t in trials], [t.values[0] for t in trials]
        return [t.values[0] for t in trials], [t.values[1] for t in trials]

    front = sorted(pareto_front(study), key=lambda t: xy([t])[0][0])
    records = {t.number: TrialRecord.from_frozen_trial(t) for t in complete}
    baselines = [t for t in complete if records[t.number].baseline is not None]
    labels = (["trial", objectives[0].name] if len(objectives) == 1
              else [objectives[0].name, objectives[1].name])
    title = f"{study.study_name}: Pareto front"
    if len(objectives) > 2:
        title += f" (first two of {len(objectives)} objectives)"
    return {"all": xy(complete), "front": xy(front), "baselines": [
        (records[t.number].baseline, *[v[0] for v in xy([t])]) for t in baselines],
        "labels": labels, "title": title,
        "front_patterns": [records[t.number].pattern or "" for t in front]}


def plot_front(study: Any, path: str | Path) -> Path:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".png", ".html"):
        raise PlotError(f"--plot {str(path)!r}: give a .png or .html file")
    if not path.parent.exists():
        raise PlotError(f"--plot {str(path)!r}: folder {str(path.parent)!r} does not exist")
    points = _points(study)
    if suffix == ".png":
        _png(points, path)
    else:
        _html(points, path)
    return path


def _png(points: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("PNG plots need matplotlib: pip install 'hybrid-nas[plots]'") from None
    figure, axes = plt.subplots(figsize=(7, 5))
    axes.scatter(*points["all"], color="0.7", s=14, label="trials")
    axes.plot(*points["front"], "o-", color="tab:blue", label="Pareto front")
    for name, x, y in points["baselines"]:
        axes.scatter([x], [y], marker="*", s=160, color="tab:red", zorder=3)
        axes.annotate(name, (x, y), textcoords="offset points", xytext=(6, 6))
    axes.set_xlabel(points["labels"][0])
    axes.set_ylabel(points["labels"][1])
    axes.set_title(points["title"])
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _html(points: dict[str, Any], path: Path) -> None:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise PlotError("HTML plots need plotly: pip install 'hybrid-nas[plots]'") from None
    figure = go.Figure()
    figure.add_scatter(x=points["all"][0], y=points["all"][1], mode="markers", name="trials",
                       marker={"color": "lightgrey"})
    figure.add_scatter(x=points["front"][0], y=points["front"][1], mode="lines+markers",
                       name="Pareto front", text=points["front_patterns"])
    if points["baselines"]:
        names, xs, ys = zip(*points["baselines"])
        figure.add_scatter(x=xs, y=ys, mode="markers+text", text=names, name="baselines",
                           textposition="top center", marker={"symbol": "star", "size": 14})
    figure.update_layout(title=points["title"], xaxis_title=points["labels"][0],
                         yaxis_title=points["labels"][1])
    figure.write_html(path, include_plotlyjs=True)
