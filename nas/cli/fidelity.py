"""`hnas fidelity`: how far a study's low budget predicts its high one."""

from __future__ import annotations

import json
import math
import sys
from typing import Optional

import typer
from rich.table import Table

from nas.cli.common import AsJson, Storage, StudyName, console, open_for_reading


def fidelity(
    study_name: StudyName,
    storage: Storage = None,
    plot: Optional[str] = typer.Option(None, "--plot", help="Also draw the ranks at each pair "
                                       "to FILE.png or FILE.html."),
    as_json: AsJson = False,
) -> None:
    """Spearman and Kendall's tau between consecutive rungs (successive halving), or between
    learning-curve points and the final score (any study), with the candidates they rest on."""
    from nas.fidelity import agreements  # Optuna: not at --help (see nas.cli)

    study = open_for_reading(study_name, storage)
    rows = agreements(study)
    if as_json:
        typer.echo(json.dumps([row.to_dict() for row in rows], indent=2))
    elif not rows:
        print(f"study {study_name!r}: nothing to compare yet (no candidate measured at two "
              "rungs, no learning-curve points)", file=sys.stderr)
    else:
        source = rows[0].source
        title = (f"{study_name}: rung against the next rung" if source == "rungs" else
                 f"{study_name}: learning-curve point against the final score")
        table = Table(title=title)
        for column in ("objective", "low steps", "high steps", "n", "Spearman", "Kendall tau-b"):
            table.add_column(column, justify="left" if column == "objective" else "right")
        for row in rows:
            table.add_row(row.objective, str(row.low), "final" if row.high is None else
                          str(row.high), str(row.n), _fmt(row.spearman), _fmt(row.kendall))
        console().print(table)
    if plot:
        from nas.plots import plot_fidelity  # not at --help (see nas.cli)

        plot_fidelity(study, plot)  # a PlotError is a UserError: one line, exit 2
        print(f"wrote {plot}", file=sys.stderr)


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.3f}"
