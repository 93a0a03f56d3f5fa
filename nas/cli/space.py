"""`hnas space check` and `hnas space sample`."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from nas.cli.common import check_seed, console, fail, human


def check(space_ref: str = typer.Argument(..., metavar="FILE_OR_PRESET")) -> None:
    """Validate a search space and show the parameters Optuna will see and its size."""
    from search_spaces import load_space  # not at --help (see nas.cli)

    space = load_space(space_ref)
    out = console()
    out.print(f"{space.name or space_ref}  pattern: {space.pattern.strip()}", style="bold")
    table = Table(title="parameters")
    for column in ("name", "distribution", "asked"):
        table.add_column(column)
    for row in space.params():
        table.add_row(row.name, row.distribution, row.when)
    out.print(table)
    fixed = {n: s.values()[0] for n, s in space.dims.items() if not s.searchable}
    if fixed:
        out.print("fixed dims: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
    if space.constraints.names():
        out.print("constraints: " + ", ".join(
            f"{k}={v}" for k, v in space.constraints.to_yaml().items()))
    size = space.size()
    out.print(f"size: {'infinite (a continuous dim)' if size is None else f'{size:,}'}"
                  f"  fingerprint: {space.fingerprint()}")


def sample(
    space_ref: str = typer.Argument(..., metavar="FILE_OR_PRESET"),
    n: int = typer.Option(5, "-n", help="How many architectures to draw."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
    context: Optional[int] = typer.Option(None, "--context",
                                          help="Context for the cache column (default: the "
                                               "space's cache constraint, else 8192)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
) -> None:
    """Draw architectures at random through Optuna and show their canonical patterns and costs."""
    # Optuna and search_spaces: not at --help (see nas.cli)
    import optuna

    from search_spaces import load_space
    from search_spaces.cost import estimate

    if n < 1:
        fail(f"-n {n}: must be at least 1")
    if context is not None and context < 1:
        fail(f"--context {context}: must be at least 1")
    check_seed("--seed", seed)
    space = load_space(space_ref)
    limit = space.constraints.max_cache_bytes
    if context is None:
        context = limit.context if limit else 8192
    dtype = limit.dtype if limit else "bf16"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    rows = []
    for _ in range(n):
        trial = study.ask()
        candidate = space.sample(trial)
        report = estimate(candidate.arch, context=context, dtype=dtype)
        rows.append((candidate, report))
    if as_json:
        for candidate, report in rows:
            typer.echo(json.dumps({
                "pattern": candidate.arch.pattern, "fingerprint": candidate.arch.fingerprint(),
                "params": candidate.params, "arch": candidate.arch.to_dict(),
                "cost": report.to_dict(), "constraints": candidate.constraints,
                "feasible": candidate.feasible}))
        return
    _print_samples(rows, context, dtype)


def _print_samples(rows, context: int, dtype: str) -> None:
    table = Table(title=f"cache at context {context}, {dtype}")
    for column in ("#", "pattern", "d_model", "params", "active", "cache", "feasible"):
        table.add_column(column, justify="left" if column == "pattern" else "right")
    for index, (candidate, report) in enumerate(rows):
        violations = candidate.violations
        feasible = "yes" if not violations else "no: " + ", ".join(
            f"{k} +{v:.2g}" for k, v in violations.items())
        table.add_row(str(index), candidate.arch.pattern, str(candidate.arch.d_model),
                      human(report.params), human(report.active_params),
                      human(report.cache_bytes, binary=True), feasible)
    console().print(table)
