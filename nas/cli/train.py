"""`hnas train`: train one architecture on a suite and print its metrics."""

from __future__ import annotations

from typing import Optional

import typer

from nas.cli.app import app
from nas.cli.common import (LR_HELP, check_seed, console, fail, human, learning_rates,
                             user_errors)
from nas.cli.cost import build_arch, parse_dim_options


@app.command()
@user_errors
def train(
    reference: str = typer.Argument(..., metavar="CONFIG_OR_PATTERN_OR_PRESET"),
    suite: str = typer.Option("quick", "--suite", help="quick, mad, mqar, lm, capacity or a suite YAML."),
    steps: Optional[int] = typer.Option(200, "--steps", help="Optimiser steps per task."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Wall-time cap per task."),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: list[float] = typer.Option([], "--lr", help=LR_HELP),
    seed: int = typer.Option(0, "--seed"),
    d_model: Optional[int] = typer.Option(None, "--d-model"),
    dim: list[str] = typer.Option([], "--dim", help="Any other dim as KEY=VALUE (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the TrialResult as JSON."),
) -> None:
    """Train one architecture (an exported config, a pattern or a preset) on a task suite.

    Exits 1 when the candidate fails (NaN loss, out of memory, ...), after printing why.
    """
    from trials.tasks import SuiteError, TaskError, load_suite
    from trials.train import Budget, BudgetError, run_trial, use_training_threads

    check_seed("--seed", seed)
    dims = parse_dim_options(dim)
    if d_model is not None:
        dims["d_model"] = d_model
    arch = build_arch(reference, dims)
    try:
        budget = Budget(steps=steps, seconds=seconds, batch_size=batch_size,
                        **learning_rates(lr))
        task_suite = load_suite(suite)
    except (BudgetError, SuiteError, TaskError) as error:
        fail(str(error))
    use_training_threads()
    result = run_trial(arch, task_suite, budget, seed=seed)
    if as_json:
        typer.echo(result.to_json())
    else:
        _print_result(result)
    if not result.ok:
        raise typer.Exit(1)


def _rate(task) -> str:
    """The peak learning rate of the reported run; under a sweep, the rates it was chosen from."""
    if task.lr is None:
        return "-"
    tried = ", ".join(f"{run['lr']:g}" for run in task.sweep)
    return f"{task.lr:g}" + (f" (best of {tried})" if tried else "")


def _print_result(result) -> None:
    from rich.table import Table

    out = console()
    table = Table(title=f"{result.pattern} on {result.suite} ({result.device}, {result.precision})")
    for column in ("task", "accuracy", "loss", "lr", "steps", "tokens/s", "seconds"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for task in result.tasks.values():
        metrics = task.metrics
        table.add_row(task.name, f"{metrics.get('accuracy', float('nan')):.3f}",
                      f"{metrics.get('loss', float('nan')):.3f}", _rate(task), str(task.steps),
                      human(task.tokens_per_s), f"{task.train_seconds:.1f}")
    out.print(table)
    if result.ok:
        measured = result.measured
        out.print(f"quality {result.quality:.4f}  params {human(result.analytic['params'])}  "
                  f"train {human(measured.get('train_tokens_per_s', 0))} tokens/s  "
                  f"decode {measured.get('decode_ms_per_token', float('nan')):.2f} ms/token "
                  f"@{int(measured.get('decode_context', 0))}  wall {result.wall_seconds:.1f} s")
    else:
        out.print(f"failed: {result.failure}", style="bold red")
