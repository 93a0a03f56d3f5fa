"""`hnas studies`, `hnas study copy`, `hnas dashboard`, `hnas export`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from nas.cli.common import (Artifacts, Storage, StudyName, console, fail, open_for_reading,
                            warn_damaged)


def studies(storage: Storage = None) -> None:
    """The studies in a database, with their trial counts and state."""
    # Optuna and search_spaces: not at --help (see nas.cli)
    from nas.snapshot import read_studies
    from nas.storage import default_url, shown_url
    from nas.study import count_trials
    from search_spaces.errors import shorten

    url = storage or default_url()
    table = Table(title=f"studies in {shown_url(url)}")
    for column in ("study", "objectives", "measured", "budget", "running", "state", "started"):
        table.add_column(column)
    for study in read_studies(url):
        warn_damaged(study)
        attrs = study.user_attrs
        counts = count_trials(study)
        budget = attrs.get("n_trials")
        if isinstance(budget, bool) or not isinstance(budget, int):
            budget = None  # not an hnas study, or a damaged attribute (`status` says which)
        state = ("running" if counts.running else
                 "done" if budget is not None and counts.distinct >= budget else "open")
        started = min((t.datetime_start for t in study.trials if t.datetime_start), default=None)
        table.add_row(study.study_name, shorten(str(attrs.get("objectives", "-")), 60),
                      str(counts.distinct), str(budget if budget is not None else "-"),
                      str(counts.running), state,
                      f"{started:%Y-%m-%d %H:%M}" if started else "-")
    console().print(table)


def copy(
    from_url: str = typer.Option(..., "--from", help="Source database URL."),
    to_url: str = typer.Option(..., "--to", help="Destination database URL."),
    study_name: Optional[str] = typer.Option(None, "--study", help="One study (default: all)."),
) -> None:
    """Copy studies between databases (for example a laptop's SQLite to a cluster's Postgres).

    Each study is copied whole or not at all, and a copy that was interrupted is finished by
    running the same command again (studies already copied are skipped). Copy a study whose
    workers have stopped: a trial still running in the source is copied as failed, marked
    "copied while running" (no worker runs it in the copy), and the copy's workers queue it
    again like the trial of a dead worker."""
    # Optuna: not at --help (see nas.cli)
    from nas.snapshot import missing_sqlite_file
    from nas.storage import (StorageError, copy_study, load_study, open_storage, shown_url,
                             study_names)

    missing = missing_sqlite_file(from_url)
    if missing:
        raise StorageError(f"storage {shown_url(from_url)!r}: no database file at {missing!r}")
    source = open_storage(from_url, heartbeat=False)
    names = [study_name] if study_name else study_names(source)
    if study_name:
        load_study(study_name, source)  # a clear error when it is not there
    target = open_storage(to_url, heartbeat=False)
    for name in names:
        done = copy_study(name, source, target)
        print(f"{done} {name} to {shown_url(to_url)}", file=sys.stderr)


def prune_artifacts(
    study_name: StudyName,
    storage: Storage = None,
    artifacts: Artifacts = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed, and "
                                 "remove nothing."),
) -> None:
    """Remove a successive-halving study's checkpoints that no promotion can use any more.

    Workers do this between trials; run it for a study whose workers have stopped (they keep a
    candidate ruled out by results under a minute old) or a folder they did not tidy. Safe
    while workers run: a checkpoint that a queued or running promotion may need is kept."""
    # Optuna: not at --help (see nas.cli)
    from optuna.artifacts import FileSystemArtifactStore

    from nas.continuation import ARTIFACTS_SUFFIX, prune_checkpoints
    from nas.snapshot import missing_sqlite_file
    from nas.storage import StorageError, default_url, load_study, open_storage, sqlite_file
    from nas.study import read_definition

    url = storage or default_url()
    missing = missing_sqlite_file(url)
    if missing:
        raise StorageError(f"study {study_name!r} not found: no database file at {missing!r}")
    study = load_study(study_name, open_storage(url))  # heartbeats: the grace period of losses
    definition = read_definition(study)
    if definition.rungs is None:
        fail(f"study {study_name!r} has no rungs (not --fidelity sh): it keeps no checkpoints")
    database = sqlite_file(url)
    if artifacts is None and database is None:
        fail(f"study {study_name!r} is not in a SQLite file: give --artifacts DIR, the folder "
             "its workers were given")
    folder = Path(artifacts if artifacts is not None else database + ARTIFACTS_SUFFIX)
    if not folder.expanduser().is_dir():
        fail(f"--artifacts {str(folder)!r}: no such folder" if artifacts is not None else
             f"study {study_name!r} has no checkpoints folder ({str(folder)!r})")
    pruned = prune_checkpoints(study, definition.rungs,
                               FileSystemArtifactStore(folder.expanduser()),
                               definition.capped_trials(), dry_run=dry_run)
    for item in pruned.removed:
        typer.echo(f"{'would remove' if dry_run else 'removed'} {item.artifact} "
                   f"(trial {item.trial}: {item.reason})")
    print(f"study {study_name!r}: {len(pruned.removed)} checkpoints "
          f"{'to remove' if dry_run else 'removed'}, {pruned.kept} kept", file=sys.stderr)
    if pruned.failed:
        item, reason = pruned.failed[0]
        fail(f"{len(pruned.failed)} checkpoints could not be removed; the first, "
             f"{item.artifact} of trial {item.trial}: {reason}")


def dashboard(
    storage: Storage = None,
    port: int = typer.Option(8080, "--port"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (0.0.0.0: "
                             "every interface)."),
) -> None:
    """Open optuna-dashboard on the study database, each objective under its own name."""
    # Optuna and optuna-dashboard: not at --help (see nas.cli)
    from nas.dashboard import serve
    from nas.storage import check_url, default_url

    if not 1 <= port <= 65535:
        fail(f"--port {port}: expected a port from 1 to 65535")
    url = storage or default_url()
    check_url(url)
    try:
        serve(url, host, port)
    except KeyboardInterrupt:
        pass
    except OSError as error:  # the port is taken, the host is not an address of this machine
        fail(f"--host {host} --port {port}: cannot serve ({error.strerror or error})")


def export(
    study_name: StudyName,
    storage: Storage = None,
    trial: Optional[int] = typer.Option(None, "--trial", help="One trial by number."),
    pareto: bool = typer.Option(False, "--pareto", help="Every trial on the Pareto front."),
    top: Optional[int] = typer.Option(None, "--top", help="The best K by --by."),
    by: Optional[str] = typer.Option(None, "--by", help="Objective for --top."),
    fmt: str = typer.Option("yaml", "--format", help="yaml, json or hf."),
    hf_family: Optional[str] = typer.Option(None, "--hf-family", help="With --format hf: "
                                            "jamba, nemotron_h, zamba2, recurrent_gemma, mamba, "
                                            "mamba2, llama, mistral or mixtral "
                                            "(default: every family that fits)."),
    out_dir: Path = typer.Option(Path("."), "-o", "--out", help="Folder for the files."),
) -> None:
    """Write trials' architectures as ArchConfig YAML/JSON (rebuilt exactly by `hnas train`)
    or as Hugging Face transformers configs where the pattern fits one."""
    from nas.export.configs import select_trials, write_trial  # not at --help (see nas.cli)
    from nas.report import rung_label, shown_rung  # Optuna: not at --help

    if fmt not in ("yaml", "json", "hf"):
        fail(f"--format {fmt!r}: expected yaml, json or hf")
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"-o {str(out_dir)!r}: a file, not a folder; give the folder to write into")
    study = open_for_reading(study_name, storage)
    chosen = select_trials(study, trial=trial, pareto=pareto, top=top, by=by)
    if trial is None:
        where = rung_label(study, shown_rung(study, study.get_trials(deepcopy=False)))
        if where:
            print(f"exporting candidates compared at {where}", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    for frozen in chosen:
        for path in write_trial(study, frozen, fmt, out_dir, hf_family=hf_family):
            typer.echo(str(path))
