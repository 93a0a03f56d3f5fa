"""Promoted candidates continue where they stopped: training states in Optuna's artifact store.

Under successive halving the study's budget has the wsd schedule (trials.train.budget): warm-up,
the peak rate held, and a short decay at the end of each rung's own steps. A run to rung r and a
run to rung r+1 agree on every step before r's decay, so the state at that point (the model,
AdamW's moments and step counts, the RNG, the position in the step-indexed data stream; one per
task of the suite and learning rate) continues to rung r+1 exactly as one uninterrupted run:

    rung trial below the top   uploads {task: {rate: TrainingState}} as one artifact;
                               `checkpoint` (record) is its artifact id
    promotion                  downloads its parent's (`promoted_from`) artifact and trains
                               only from the parent's `resumed_step` to its rung's budget;
                               a missing or unreadable artifact: trains afresh, `retrained`
                               says why (the result is the same, only the cost differs)

The store is Optuna's `FileSystemArtifactStore`: `<database file>.artifacts/` beside a SQLite
study by default, or the `--artifacts DIR` of `hnas search`/`hnas worker` (a path every worker's
machine mounts, for PostgreSQL). Artifact ids are UUIDs recorded on the trial, so any worker
that can read the directory continues any candidate. Without a store, promotions retrain.

A checkpoint no promotion can use any more (nas.halving.spent_checkpoints) is removed by the
workers between trials and by `hnas study prune-artifacts`, and recorded in the study as
`hnas:removed:<artifact id>` (a study system attribute, written once: the first remover's
record stays). Several workers may remove the same one at once: a checkpoint already gone
counts as removed. A promotion whose parent's checkpoint was removed (the study's budget grew
after its rung was decided) retrains and says so.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optuna.artifacts.exceptions import ArtifactNotFound

from nas.claims import Claims
from nas.halving import Spent, spent_checkpoints, stored_artifacts
from nas.record import TrialRecord
from nas.rungs import Rungs
from nas.storage import REMOVED, first_line, sqlite_file

FORMAT = 1  # of the uploaded file: {"format": 1, "runs": {task: {rate: TrainingState dict}}}
ARTIFACTS_SUFFIX = ".artifacts"


class CheckpointUnavailable(Exception):
    """A parent's checkpoint that cannot be used; the message says why, in one line."""


def artifact_store(url: str, directory: str | None) -> tuple[Any, str | None]:
    """(Optuna FileSystemArtifactStore, None), or (None, a note saying why there is none):
    `directory` if given, else `<sqlite file>.artifacts` beside a SQLite study."""
    from optuna.artifacts import FileSystemArtifactStore  # Optuna: not at `hnas --help`

    if directory is None:
        database = sqlite_file(url)
        if database is None:
            return None, ("promotions retrain from scratch: give --artifacts DIR (a folder "
                          "every worker can read) to let them continue from checkpoints")
        directory = database + ARTIFACTS_SUFFIX
    folder = Path(directory).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return None, f"promotions retrain from scratch: artifacts folder {str(folder)!r}: " \
                     f"{error.strerror or error}"
    return FileSystemArtifactStore(folder), None


def save_checkpoints(store: Any, trial: Any, checkpoints: dict[str, dict[float, Any]]) -> str:
    """Upload a run's training states ({task: {rate: TrainingState}}); the artifact id."""
    import torch  # loaded already by the training that produced the states
    from optuna.artifacts import upload_artifact

    payload = {"format": FORMAT, "runs": {task: {rate: state.to_dict()
                                                  for rate, state in by_rate.items()}
                                           for task, by_rate in checkpoints.items()}}
    with tempfile.TemporaryDirectory(prefix="hnas-checkpoint-") as folder:
        path = Path(folder) / "checkpoint.pt"
        torch.save(payload, path)
        return upload_artifact(artifact_store=store, file_path=str(path),
                               study_or_trial=trial, mimetype="application/x-pytorch")


def load_checkpoints(store: Any, artifact_id: str, tasks: list[str],
                     rates: tuple[float, ...]) -> tuple[dict[str, dict[float, Any]], int]:
    """The training states of `artifact_id` for every task and rate, and the step they all
    stopped at; CheckpointUnavailable when it is missing, unreadable or incomplete."""
    import torch  # a promotion is about to train: torch is loaded anyway
    from optuna.artifacts import download_artifact

    from trials.train import TrainingState

    with tempfile.TemporaryDirectory(prefix="hnas-checkpoint-") as folder:
        path = Path(folder) / "checkpoint.pt"
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any reason to be unreadable is a retrain
            raise CheckpointUnavailable(f"artifact {artifact_id}: {first_line(error)}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointUnavailable(f"artifact {artifact_id}: not an hnas checkpoint of format "
                                    f"{FORMAT}")
    states: dict[str, dict[float, Any]] = {}
    for task in tasks:
        for rate in rates:
            data = payload["runs"].get(task, {}).get(rate)
            if data is None:
                raise CheckpointUnavailable(f"artifact {artifact_id}: no state for task {task!r} "
                                            f"at lr {rate:g}")
            states.setdefault(task, {})[rate] = TrainingState.from_dict(data)
    steps = {state.step for by_rate in states.values() for state in by_rate.values()}
    if len(steps) != 1:
        raise CheckpointUnavailable(f"artifact {artifact_id}: its runs stopped at different "
                                    f"steps {sorted(steps)}")
    return states, steps.pop()


# -- removing the checkpoints no promotion can use ----------------------------------------------


@dataclass(frozen=True)
class Pruned:
    """What one pass over a study's checkpoints did: `removed` now (or, dry, would remove),
    `failed` (the checkpoint and why; tried again next pass) and how many stay `kept`."""

    removed: tuple[Spent, ...] = ()
    failed: tuple[tuple[Spent, str], ...] = ()
    kept: int = 0


def _remove(store: Any, artifact: str) -> str | None:
    """Remove one checkpoint; None when it is gone (a file already missing counts: another
    worker removed it a moment ago, or its upload never wrote it), else why it stays."""
    try:
        store.remove(artifact)
    except ArtifactNotFound:
        return None
    except (OSError, ValueError) as error:  # a read-only folder; a damaged id
        return getattr(error, "strerror", None) or first_line(error)
    return None


def removed_checkpoints(system_attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Artifact id -> the record of its removal, from a study's system attributes."""
    return {key.removeprefix(REMOVED): value for key, value in system_attrs.items()
            if key.startswith(REMOVED)}


def prune_checkpoints(study: Any, rungs: Rungs, store: Any, capacity: int,
                      trials: Sequence[Any] | None = None,
                      records: Mapping[int, TrialRecord] | None = None, *,
                      dry_run: bool = False, **when: Any) -> Pruned:
    """Remove the study's spent checkpoints from `store` and record each removal (`when`: `now`
    and `settle` of nas.halving.spent_checkpoints). Safe beside workers: a checkpoint that a
    queued or running promotion may need is not spent, and one removed meanwhile by another
    worker (or never written) counts as removed."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    claims = Claims(study)
    gone = set(removed_checkpoints(claims.values(REMOVED)))
    removed, failed = [], []
    for item in spent_checkpoints(study, rungs, trials, capacity, records, **when):
        if item.artifact in gone:
            continue
        if not dry_run:
            problem = _remove(store, item.artifact)
            if problem is not None:
                failed.append((item, problem))
                continue
            claims.insert(f"{REMOVED}{item.artifact}", {"trial": item.trial,
                                                        "reason": item.reason})
        removed.append(item)
    stored = {artifact for trial in trials for artifact in stored_artifacts(trial)}
    return Pruned(tuple(removed), tuple(failed),
                  len(stored - gone - {item.artifact for item in removed}))
