"""Interactive HTML pictures (plotly, an optional extra imported on first use) of
nas.plots.data's records, one self-contained file each: the front (a scatter matrix from three
objectives), the front's learning curves, the fidelity rank panels."""

from __future__ import annotations

from pathlib import Path

from nas.plots.data import Curve, FrontData, Pair, PlotError, Point, humane, log_scale, staircase
from nas.ranking import ranks

PLOTLY_MARKERS = ("circle", "square", "triangle-up", "diamond", "triangle-down", "cross")


def plotly():
    try:
        import plotly.graph_objects as go  # an optional extra (hybrid-nas[plots])
    except ImportError:
        raise PlotError("HTML plots need plotly: pip install 'hybrid-nas[plots]'") from None
    return go


def hover(points: list[Point], data: FrontData) -> list[str]:
    return [f"trial {p.trial}: {p.pattern}<br>" + "<br>".join(
        f"{a.name} {humane(v, a.unit)}" for a, v in zip(data.axes, p.values)) for p in points]


def front(data: FrontData, path: Path) -> None:
    go = plotly()
    figure = go.Figure()
    count = len(data.axes)
    if count == 1:
        ordered = sorted(data.shown, key=lambda p: p.trial)
        figure.add_scatter(x=[p.trial for p in ordered], y=[p.values[0] for p in ordered],
                           mode="markers", name="trials", text=hover(ordered, data))
        figure.update_layout(xaxis_title="trial", yaxis_title=data.axes[0].label())
    elif count == 2:
        for rung, points in sorted(data.others.items()):
            figure.add_scatter(x=[p.values[0] for p in points], y=[p.values[1] for p in points],
                               mode="markers", name=f"rung {rung} ({data.rung_steps.get(rung)} "
                               "steps)", marker={"color": "lightgrey",
                                                 "symbol": PLOTLY_MARKERS[rung % 6]},
                               text=hover(points, data))
        figure.add_scatter(x=[p.values[0] for p in data.shown],
                           y=[p.values[1] for p in data.shown], mode="markers",
                           name="candidates", marker={"color": "grey"},
                           text=hover(data.shown, data))
        path_xy = staircase([(p.values[0], p.values[1]) for p in data.front],
                            (data.axes[0].direction, data.axes[1].direction))
        figure.add_scatter(x=[x for x, _ in path_xy], y=[y for _, y in path_xy],
                           mode="lines", name="front (staircase)", line={"color": "royalblue"})
        figure.add_scatter(x=[p.values[0] for p in data.front],
                           y=[p.values[1] for p in data.front], mode="markers",
                           name="Pareto front", marker={"color": "royalblue", "size": 9},
                           text=hover(data.front, data))
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
            text=hover(data.shown, data), showupperhalf=False, diagonal_visible=False,
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


def curves(lines: list[Curve], title: str, path: Path) -> None:
    go = plotly()
    figure = go.Figure()
    for line in lines:
        figure.add_scatter(x=line.steps, y=line.accuracies, mode="lines+markers", name=line.label)
    figure.update_layout(title=title, xaxis_title="training step",
                         yaxis_title="test accuracy (curve points)")
    figure.write_html(path, include_plotlyjs=True)


def fidelity(panels: list[tuple[Pair, str]], study_name: str, path: Path) -> None:
    plotly()
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=len(panels), cols=1, subplot_titles=[t for _, t in panels])
    for index, (panel, _) in enumerate(panels, 1):
        figure.add_scatter(x=ranks(panel.low_values), y=ranks(panel.high_values),
                           mode="markers", row=index, col=1, showlegend=False,
                           text=[f"trial {n}" for n in panel.trials])
    figure.update_layout(height=350 * len(panels),
                         title=f"{study_name}: ranks at the low budget vs the high")
    figure.write_html(path, include_plotlyjs=True)
