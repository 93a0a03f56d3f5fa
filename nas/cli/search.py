"""`hnas search`, `hnas resume` and `hnas worker`: running studies."""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from typing import Optional

import typer

from nas.cli.common import (DEFAULT_SUITE, Artifacts, BatchSize, LearningRates, OutageWait,
                            Quiet, Seed, Storage, StudyName, Suite, check_seed, check_timeout,
                            describe_change, fail, suite_training)

CURVE_BATCHES = 4
FIDELITIES = ("full", "sh")
INTERRUPTED = 130  # the shell's code for Ctrl-C


def search(
    space_ref: str = typer.Argument(..., metavar="SPACE", help="A space YAML file or preset."),
    study_name: Optional[str] = typer.Option(None, "--study", help="Study name (default: the "
                                             "space's name)."),
    storage: Storage = None,
    suite: Suite = DEFAULT_SUITE,
    objectives: str = typer.Option("quality,params", "--objectives",
                                   help="Comma-separated: quality, loss, params, active_params, "
                                        "flops@N, cache@N, train_tokens_per_s, decode_ms@N."),
    sampler: str = typer.Option("nsga2", "--sampler", help="nsga2, tpe, gp, random or grid."),
    n_trials: Optional[int] = typer.Option(None, "--n-trials", help="The study's trial budget "
                                           "(default 20; grid: the space's size)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop after S seconds."),
    budget_steps: Optional[int] = typer.Option(
        None, "--budget-steps", help="Training steps per task (default: the suite's calibrated "
        "budget, 600 on recall64, the default suite; 100 on others; with --fidelity sh, the "
        "last rung)."),
    budget_seconds: Optional[float] = typer.Option(None, "--budget-seconds",
                                                   help="Wall-time cap per task."),
    batch_size: BatchSize = 32,
    lr: LearningRates = [],  # noqa: B006 - typer's way to give a repeatable option no values
    seed: Seed = 0,
    baselines: str = typer.Option("", "--baselines", help="Presets to enqueue, e.g. "
                                  "jamba,zamba,griffin,stripedhyena,transformer,mamba."),
    workers: int = typer.Option(1, "--workers", help="Worker processes on this machine."),
    allow_changes: bool = typer.Option(False, "--allow-changes", help="Continue an existing "
                                       "study although its space, suite or budget differ."),
    quiet: Quiet = False,
    outage_wait: OutageWait = None,
    fidelity: str = typer.Option("full", "--fidelity", help="full: every candidate trains the "
                                 "whole budget; sh: successive halving over --rungs."),
    rungs: Optional[str] = typer.Option(None, "--rungs", help="--fidelity sh: budgets in steps, "
                                        "such as 100,300,900 (the last is the full budget)."),
    min_steps: Optional[int] = typer.Option(None, "--min-steps", help="--fidelity sh: the "
                                            "first rung; rungs grow by --eta up to "
                                            "--budget-steps."),
    eta: Optional[int] = typer.Option(None, "--eta", help="--fidelity sh: the top 1/eta of a "
                                      "rung is promoted (default 3)."),
    artifacts: Artifacts = None,
) -> None:
    """Search a space: sample candidates, train them briefly, record every result."""
    # Optuna (through storage) and search_spaces: not at --help (see nas.cli)
    from nas.definition import StudyDefinition, toolkit_versions
    from nas.objectives import parse_objectives
    from nas.storage import default_url, open_storage
    from search_spaces import arch_names, load_space

    check_seed("--seed", seed)
    check_timeout(timeout)
    space = load_space(space_ref)
    parse_objectives(objectives)
    names = tuple(name.strip() for name in baselines.split(",") if name.strip())
    unknown = [name for name in names if name not in arch_names()]
    if unknown:
        fail(f"--baselines: unknown preset {unknown[0]!r} (valid: {', '.join(arch_names())})")
    if workers < 1:
        fail(f"--workers: expected at least 1, got {workers}")
    if n_trials is not None and n_trials < 1:
        fail(f"--n-trials: expected at least 1, got {n_trials}")
    if n_trials is None:
        n_trials = _grid_size(space) if sampler == "grid" else 20
    size = space.size()
    if size is not None and n_trials > size:
        print(f"note: --n-trials {n_trials}: the space has {size} parameter assignments; the "
              f"search measures at most {size} distinct architectures", file=sys.stderr)
    task_suite = _load_suite(suite)
    default_steps = task_suite.training.steps  # the budget the suite was calibrated at
    schedule = _rungs(fidelity, rungs, min_steps, eta, budget_steps, default_steps)
    if schedule is not None:
        budget_steps = schedule.full_steps
    budget = _budget(task_suite, budget_steps or default_steps, budget_seconds, batch_size, lr)
    if schedule is not None:
        from nas.halving import with_shared_warmup  # Optuna: not at --help (see nas.cli)

        # Promotions continue from checkpoints (nas.continuation): warm-up, the peak rate held,
        # and a decay before each rung's evaluation.
        budget = with_shared_warmup(dataclasses.replace(budget, schedule="wsd"), schedule)
    definition = StudyDefinition(
        space_yaml=space.to_yaml(), space_fingerprint=space.fingerprint(),
        suite=task_suite.to_dict(), suite_fingerprint=task_suite.fingerprint(),
        budget=budget.to_dict(), objectives=objectives, sampler=sampler, n_trials=n_trials,
        seed=seed, baselines=names, versions=toolkit_versions(),
        fidelity=None if schedule is None else schedule.to_dict())
    name = study_name or space.name or "hnas"
    url = storage or default_url()
    patience = _patience(outage_wait)
    _run(name, url, open_storage(url), definition, allow_changes, timeout, workers, quiet,
         patience, artifacts)


def resume(
    study_name: StudyName,
    storage: Storage = None,
    n_trials: Optional[int] = typer.Option(None, "--n-trials",
                                           help="New trial budget for the study (a total)."),
    timeout: Optional[float] = typer.Option(None, "--timeout"),
    workers: int = typer.Option(1, "--workers"),
    quiet: Quiet = False,
    outage_wait: OutageWait = None,
    artifacts: Artifacts = None,
) -> None:
    """Continue a study with its stored space, suite, budget and objectives."""
    # Optuna (through storage) and search_spaces: not at --help (see nas.cli)
    from nas.storage import default_url, load_study, open_storage
    from nas.study import read_definition

    if n_trials is not None and n_trials < 1:
        fail(f"--n-trials: expected at least 1, got {n_trials}")
    check_timeout(timeout)
    patience = _patience(outage_wait)
    url = storage or default_url()
    db = open_storage(url)
    definition = read_definition(load_study(study_name, db))
    definition.check(study_name)
    if n_trials is not None:
        definition = definition.with_trials(n_trials)
    _run(study_name, url, db, definition, False, timeout, workers, quiet, patience, artifacts)


def worker(
    study_name: str = typer.Option(..., "--study"),
    storage: Storage = None,
    timeout: Optional[float] = typer.Option(None, "--timeout"),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch CPU threads "
                                          "(default 1, or $HNAS_THREADS)."),
    seed_offset: Optional[int] = typer.Option(
        None, "--seed-offset", help="Added to the study's seed (default: an index no other "
        "worker of the study has had, so workers draw different candidates without it)."),
    quiet: Quiet = False,
    outage_wait: OutageWait = None,
    artifacts: Artifacts = None,
) -> None:
    """Join an existing study (from any machine) and run trials until it has its budget."""
    # Optuna and torch: not at --help (see nas.cli)
    from nas.cli.progress import SearchProgress
    from nas.storage import default_url, open_storage
    from nas.study import open_study, run_worker
    from trials import use_training_threads

    if seed_offset is not None and seed_offset < 0:
        fail(f"--seed-offset {seed_offset}: expected 0 or more")
    check_timeout(timeout)
    patience = _patience(outage_wait)
    use_training_threads(threads)
    url = storage or default_url()
    # A URL that never connects fails at once (a typo is not an outage); once the database has
    # answered, every later call, the rest of the start's included, waits out an outage.
    db = open_storage(url)
    study, definition = patience(open_study, study_name, db, seed_offset=seed_offset)
    progress = SearchProgress(study, definition.n_trials, quiet=quiet, patience=patience)
    store = _artifact_store(url, artifacts, definition, progress.note)
    try:
        with progress:
            run_worker(study, definition, timeout=timeout, on_trial=progress.trial_done,
                       patience=patience, artifacts=store)
    except KeyboardInterrupt:
        _interrupted(study_name, storage)


def _rungs(fidelity: str, rungs: Optional[str], min_steps: Optional[int], eta: Optional[int],
           budget_steps: Optional[int], default_steps: int):
    """The successive-halving rungs of `--fidelity sh`, or None for `--fidelity full`; without
    --rungs, they grow up to --budget-steps or the suite's `default_steps`."""
    from nas.rungs import RungError, parse_rungs

    if fidelity not in FIDELITIES:
        fail(f"--fidelity {fidelity!r}: unknown (valid: {', '.join(FIDELITIES)})")
    if fidelity == "full":
        given = [flag for flag, value in (("--rungs", rungs), ("--min-steps", min_steps),
                                          ("--eta", eta)) if value is not None]
        if given:
            fail(f"{given[0]}: only with --fidelity sh")
        return None
    try:
        return parse_rungs(rungs, min_steps=min_steps, eta=eta, max_steps=budget_steps if
                           rungs is not None else budget_steps or default_steps)
    except RungError as error:
        fail(str(error))


def _artifact_store(url: str, directory: Optional[str], definition, note):
    """Where a successive-halving study keeps the checkpoints its promotions continue from
    (nas.continuation); None, with a note, when there is nowhere (they retrain), and None for
    a study that keeps none."""
    if definition.rungs is None or definition.load_budget().decay_start is None:
        return None
    from nas.continuation import artifact_store  # Optuna: not at --help (see nas.cli)

    store, message = artifact_store(url, directory)
    if message is not None:
        note(f"note: {message}")
    return store


def _patience(outage_wait: Optional[float]):
    from nas.storage import Patience  # Optuna: not at --help (see nas.cli)

    if outage_wait is None:
        return Patience()
    if outage_wait < 0:
        fail(f"--outage-wait {outage_wait:g}: expected 0 or more seconds")
    return Patience(outage_wait)


def _run(name: str, url: str, storage, definition, allow_changes: bool,
         timeout: Optional[float], workers: int, quiet: bool, patience,
         artifacts: Optional[str]) -> None:
    # Optuna: not at --help (see nas.cli)
    from nas.cli.progress import SearchProgress
    from nas.study import create_or_check, open_study, run_worker

    study, opened = create_or_check(name, storage, definition, allow_changes=allow_changes)
    progress = SearchProgress(study, definition.n_trials, quiet=quiet, patience=patience)
    if opened.changes:
        progress.note("continuing with changed " + ", ".join(map(describe_change,
                                                                 opened.changes)))
    for message in opened.messages:
        progress.note(message)
    try:
        with progress:
            if workers == 1:
                # torch: only a process that trains loads it (workers > 1: the children do)
                from trials.train import use_training_threads

                use_training_threads()
                study, _ = open_study(name, storage, definition=definition)
                progress.study = study
                run_worker(study, definition, timeout=timeout, on_trial=progress.trial_done,
                           patience=patience,
                           artifacts=_artifact_store(url, artifacts, definition, progress.note))
            else:
                _run_processes(name, url, study, workers, timeout, progress, patience.wait_s,
                               artifacts)
    except KeyboardInterrupt:
        _interrupted(name, url)
    progress.summary()


def _run_processes(name: str, url: str, study, workers: int, timeout: Optional[float],
                   progress, outage_wait: float, artifacts: Optional[str]) -> None:
    from nas.workers import start_workers  # Optuna: not at --help (see nas.cli)

    processes = start_workers(name, url, workers, timeout=timeout, outage_wait=outage_wait,
                              artifacts=artifacts)
    try:
        while any(w.process.poll() is None for w in processes):
            progress.refresh()
            time.sleep(1.0)
    finally:
        for w in processes:
            if w.process.poll() is None:
                w.process.terminate()
            w.process.wait()
    progress.refresh()
    broken = [w for w in processes if w.process.returncode not in (0, None)]
    if broken:
        fail("; ".join(f"worker {w.index} exited with {w.process.returncode}: "
                       f"{w.last_line()} (log: {w.log})" for w in broken))
    shutil.rmtree(processes[0].log.parent, ignore_errors=True)  # logs are kept only on failure


def _grid_size(space) -> int:
    size = space.size()
    if size is None:
        fail("--sampler grid: the space has a continuous dim; give it a step or a list")
    return size


def _load_suite(suite: str):
    from trials import load_suite  # torch: not at --help (see nas.cli)

    return load_suite(suite)


def _budget(suite, steps: int, seconds: Optional[float], batch_size: int, lr: list[float]):
    from trials import Budget  # torch: not at --help (see nas.cli)

    # Learning-curve points on a few test batches: the final score uses the whole test set.
    return Budget(steps=steps, seconds=seconds, batch_size=batch_size,
                  eval_batches=CURVE_BATCHES, **suite_training(lr, suite))


def _interrupted(name: str, storage: Optional[str]) -> None:
    where = f" --storage {storage}" if storage else ""
    print(f"interrupted; study {name!r} is consistent, continue it with: "
          f"hnas resume {name}{where}", file=sys.stderr)
    raise typer.Exit(INTERRUPTED)
