"""`hnas train`: train one architecture on a suite and print its metrics."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from nas.cli.common import (AsJson, BatchSize, DModel, Dims, LearningRates, Seed, Suite,
                            build_arch, check_seed, console, fail, human, suite_training,
                            parse_dim_options)


def train(
    reference: str = typer.Argument(..., metavar="CONFIG_OR_PATTERN_OR_PRESET"),
    suite: Suite = "quick",
    steps: Optional[int] = typer.Option(200, "--steps", help="Optimiser steps per task."),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="Wall-time cap per task."),
    batch_size: BatchSize = 32,
    lr: LearningRates = [],  # noqa: B006 - typer's way to give a repeatable option no values
    seed: Seed = 0,
    d_model: DModel = None,
    dim: Dims = [],  # noqa: B006 - as lr
    as_json: AsJson = False,
    processes: Optional[int] = typer.Option(
        None, "--processes", help="Tasks trained at once, one process each on one thread "
        "(default: one per usable core; 1 trains them in turn)."),
) -> None:
    """Train one architecture (an exported config, a pattern or a preset) on a task suite.

    Exits 1 when the candidate fails (NaN loss, out of memory, ...), after printing why.
    """
    from trials import Budget, load_suite, run_trial, use_training_threads  # torch: not at --help

    check_seed("--seed", seed)
    if processes is not None and processes < 1:
        fail(f"--processes: expected at least 1, got {processes}")
    arch = build_arch(reference, parse_dim_options(dim, d_model))
    task_suite = load_suite(suite)
    budget = Budget(steps=steps, seconds=seconds, batch_size=batch_size,
                    **suite_training(lr, task_suite))
    use_training_threads()
    result = run_trial(arch, task_suite, budget, seed=seed, processes=processes)
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
