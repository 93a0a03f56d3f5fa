"""`hnas study copy` of a study with a trial still running: nothing in the copy claims to run
(no worker there beats for it), and the trial is lost like a dead worker's, so the copy's
workers queue it again with the same parameters."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState
from typer.testing import CliRunner

from nas.cli import app
from nas.record import TrialRecord
from nas.study import count_trials, requeue_lost


def test_a_running_trial_is_copied_as_failed_and_queued_again_there(tmp_path):
    source, target = f"sqlite:///{tmp_path / 'live.db'}", f"sqlite:///{tmp_path / 'copy.db'}"
    study = optuna.create_study(study_name="live", storage=source)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    running = study.ask()
    running.suggest_float("x", 0, 1)
    running.set_user_attr("pattern", "M A")
    running.report(0.5, step=1)
    study.enqueue_trial({"x": 0.25})

    result = CliRunner().invoke(app, ["study", "copy", "--from", source, "--to", target])
    assert result.exit_code == 0, result.output

    copied = optuna.load_study(study_name="live", storage=target)
    states = [t.state for t in copied.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.FAIL,
                      TrialState.WAITING]
    lost = copied.trials[running.number]
    assert TrialRecord.from_frozen_trial(lost).copied_running
    assert lost.user_attrs["pattern"] == "M A" and lost.params == running.params
    assert lost.intermediate_values == {1: 0.5} and lost.datetime_complete is not None
    assert count_trials(copied).running == 0
    # the source is untouched
    assert optuna.load_study(study_name="live", storage=source).trials[running.number].state \
        == TrialState.RUNNING

    assert requeue_lost(copied, settle=0) == 1
    again = copied.get_trials(states=(TrialState.WAITING,))
    retried = [t for t in again if TrialRecord.from_frozen_trial(t).retry_of == running.number]
    assert len(retried) == 1
    assert retried[0].system_attrs["fixed_params"] == running.params


def test_a_copy_keeps_checkpoint_removals_and_drops_claims(tmp_path):
    """A removal record names a file in the artifact store, which the copy shares; a claim names
    trial ids of the source database, which mean nothing in the copy."""
    from nas.claims import ARCH, Claims
    from nas.continuation import removed_checkpoints

    source, target = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    study = optuna.create_study(study_name="s", storage=source)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    claims = Claims(study)
    claims.insert("hnas:removed:abc", {"trial": 0, "reason": "continued"})
    assert claims.take(f"{ARCH}x", study.trials[1]._trial_id) is None

    result = CliRunner().invoke(app, ["study", "copy", "--from", source, "--to", target])
    assert result.exit_code == 0, result.output
    copied = optuna.load_study(study_name="s", storage=target)
    attrs = copied._storage.get_study_system_attrs(copied._study_id)
    assert removed_checkpoints(attrs) == {"abc": {"trial": 0, "reason": "continued"}}
    assert not any(key.startswith(ARCH) for key in attrs)
