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
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from nas.storage import first_line, sqlite_file

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

