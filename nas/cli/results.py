"""`hnas status`, `hnas trials`, `hnas pareto`: reading what a study found."""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from typing import Any, Optional

import typer
from rich.table import Table

from nas.cli.common import AsJson, Storage, StudyName, console, fail, human, open_for_reading
from nas.record import records_of


RUNG_HELP = ("Successive halving: compare candidates at this rung (0 = the first; default: "
             "the highest rung with at least 3 candidates).")


def status(
    study_name: StudyName,
    storage: Storage = None,
    rung: Optional[int] = typer.Option(None, "--rung", help=RUNG_HELP),
    as_json: AsJson = False,
) -> None:
    """Trials by state, failures by reason, trials/hour, best per objective, front size."""
    from nas import report  # Optuna: not at --help (see nas.cli)

    summary = report.status(open_for_reading(study_name, storage), rung)
    if as_json:
        typer.echo(json.dumps(summary.to_dict(), indent=2, default=str))
        return
    out = console()
    states = ", ".join(f"{count} {name}" for name, count in summary.states.items() if count)
    out.print(f"study {summary.study}: {summary.counted}/{summary.n_trials} architectures "
              f"measured, {summary.measured} evaluations "
              f"({states or 'no trials'}); sampler {summary.sampler}", style="bold")
    out.print(f"distinct architectures {summary.distinct_architectures}, duplicates reused "
              f"{summary.duplicates}, Pareto front {summary.pareto_size}"
              + (f", {summary.trials_per_hour:.1f} trials/hour"
                 if summary.trials_per_hour else ""))
    out.print(_training_line(summary.training))
    fidelity = summary.fidelity
    if fidelity:
        per_rung = ", ".join(f"{steps} steps {count}" for steps, count in
                             zip(fidelity.rungs, fidelity.candidates_per_rung))
        out.print(f"successive halving (eta {fidelity.eta}), candidates per rung: {per_rung}; "
                  f"best and front at rung {fidelity.shown_rung} ({fidelity.shown_steps} steps)")
        if fidelity.continued or fidelity.retrained:
            out.print(f"promotions: {fidelity.continued} continued from a checkpoint "
                      f"({fidelity.steps_saved} steps per task not trained again), "
                      f"{fidelity.retrained} retrained (no checkpoint to continue)")
        if fidelity.checkpoints_kept or fidelity.checkpoints_removed:
            out.print(f"checkpoints: {fidelity.checkpoints_kept} kept for promotions, "
                      f"{fidelity.checkpoints_removed} removed (no promotion can use them)")
    for counted, label in ((summary.failures, "failed"), (summary.pruned, "infeasible"),
                           (summary.lost, "re-run")):
        if counted:
            out.print(f"{label}: " + ", ".join(f"{reason} x{count}"
                                               for reason, count in counted.items()))
    if summary.baselines:
        out.print("baselines: " + ", ".join(f"{name} (trial {number})"
                                            for name, number in summary.baselines.items()))
    if summary.best:
        table = Table(title="best per objective")
        for column in ("objective", "direction", *(f.name for f in fields(report.Best))):
            table.add_column(column)
        directions = {o.name: o.direction for o in summary.objectives}
        for name, best in summary.best.items():
            table.add_row(name, directions[name], _fmt(best.value), str(best.trial),
                          best.pattern or "")
        out.print(table)


def _training_line(training) -> str:
    limits = [f"{training.steps} steps" if training.steps else "",
              f"{training.seconds:g} s" if training.seconds else ""]
    line = (f"training: suite {training.suite}, {' or '.join(x for x in limits if x)} per "
            f"task, batch {training.batch_size}, ")
    rates = training.lr
    if not isinstance(rates, (list, tuple)):
        return line + f"lr {rates:g}"
    wins = ", ".join(f"{rate} x{count}" for rate, count in training.best_lr_counts.items())
    swept = ", ".join(f"{rate:g}" for rate in rates)
    return line + f"lr sweep {swept} (best run of a task: {wins})"


def trials(
    study_name: StudyName,
    storage: Storage = None,
    state: Optional[str] = typer.Option(None, "--state", help="complete, fail, pruned, "
                                        "running or waiting."),
    sort: Optional[str] = typer.Option(None, "--sort", help="An objective, best first."),
    limit: Optional[int] = typer.Option(None, "--limit"),
    as_json: AsJson = False,
    as_csv: bool = typer.Option(False, "--csv"),
) -> None:
    """The study's trials: pattern, every objective, baseline, duplicate and failure."""
    from nas import report  # Optuna: not at --help (see nas.cli)

    if limit is not None and limit < 0:
        fail(f"--limit {limit}: expected 0 or more")
    rows = report.trial_rows(open_for_reading(study_name, storage), state=state, sort=sort,
                             limit=limit)
    _print_rows([row.to_dict() for row in rows], as_json, as_csv, f"trials of {study_name}",
                report.EMPTY_COLUMNS)


def pareto(
    study_name: StudyName,
    storage: Storage = None,
    plot: Optional[str] = typer.Option(None, "--plot", help="Also draw the front to FILE.png "
                                       "(matplotlib) or FILE.html (plotly)."),
    curves: Optional[str] = typer.Option(None, "--curves", help="Also draw the learning curves "
                                         "of the front's trials to FILE.png or FILE.html."),
    rung: Optional[int] = typer.Option(None, "--rung", help=RUNG_HELP),
    as_json: AsJson = False,
    as_csv: bool = typer.Option(False, "--csv"),
) -> None:
    """The Pareto front: canonical pattern and every objective, baselines marked."""
    from nas import report  # Optuna: not at --help (see nas.cli)

    study = open_for_reading(study_name, storage)
    objectives = report.objectives_of(study)
    trials = study.get_trials(deepcopy=False)
    records = records_of(trials)  # parsed once, for the rung, the front and its rows
    rung = report.shown_rung(study, trials, rung, records)
    rows = [report.trial_row(t, objectives, records[t.number]).to_dict()
            for t in report.pareto_front(study, trials, rung=rung, records=records)]
    where = report.rung_label(study, rung)
    _print_rows(rows, as_json, as_csv, f"Pareto front of {study_name}" +
                (f" at {where}" if where else ""), report.EMPTY_COLUMNS)
    if where and (as_json or as_csv):
        print(f"Pareto front at {where}", file=sys.stderr)
    if plot or curves:
        from nas.plots import plot_curves, plot_front  # not at --help (see nas.cli)

        for path, draw in ((plot, plot_front), (curves, plot_curves)):
            if path:
                draw(study, path, rung=rung)  # a PlotError is a UserError: one line, exit 2
                print(f"wrote {path}", file=sys.stderr)


def _print_rows(rows: list[dict[str, Any]], as_json: bool, as_csv: bool, title: str,
                empty: tuple[str, ...]) -> None:
    """Rows as JSON, CSV or a table (`empty`: the table's columns when there are no rows).
    The columns are every key of any row, in order of first use, and every row has each (null
    where it lacks one: a trial not trained yet has no `rung`)."""
    columns = list(dict.fromkeys(key for row in rows for key in row)) or list(empty)
    if as_json:
        typer.echo(json.dumps([{c: row.get(c) for c in columns} for row in rows], indent=2,
                              default=str))
        return
    if as_csv:
        import csv  # 3 ms that every start-up of `hnas` would pay

        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        return
    table = Table(title=title)
    shown = [c for c in columns if any(row.get(c) is not None for row in rows)] or columns
    for column in shown:  # text left, numbers right
        text = any(isinstance(row.get(column), str) for row in rows) or not rows
        table.add_column(column, justify="left" if text else "right")
    for row in rows:
        table.add_row(*[_fmt(row.get(column)) for column in shown])
    console().print(table)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else human(value)
    return str(value)
