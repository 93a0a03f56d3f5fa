"""Continuing a training run: the wsd schedule, and a continued run against an uninterrupted one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from search_spaces import ArchConfig
from trials.tasks import MQAR, InContextRecall, Suite, SuiteEntry
from trials.train import Budget, BudgetError, run_trial
from trials.train.module import StepBatches

# Rungs of 10 and 30 steps: warm-up 2 steps (10% of the first rung), decay the last 20%.
SHORT = Budget(steps=10, batch_size=8, eval_every=5, decode_context=0, schedule="wsd",
               warmup_steps=2)
LONG = dataclasses.replace(SHORT, steps=30)


def suite() -> Suite:
    return Suite(name="tiny", entries=(
        SuiteEntry(task=MQAR(seq_len=32, num_kv_pairs=4, vocab_size=32), n_train=48, n_test=16),
        SuiteEntry(task=InContextRecall(seq_len=32), n_train=48, n_test=16),
    ))


def arch() -> ArchConfig:
    return ArchConfig.from_pattern("M A", d_model=32, n_heads=2, d_state=4)


def test_wsd_schedule_agrees_with_a_longer_run_until_its_decay():
    assert SHORT.decay_start == 8 and LONG.decay_start == 24
    factors = [SHORT.lr_factor(k) for k in range(10)]
    assert factors[:2] == [0.5, 1.0] and factors[2:8] == [1.0] * 6
    assert factors[8] < 1.0 and factors[9] == pytest.approx(SHORT.min_lr_ratio)
    assert [LONG.lr_factor(k) for k in range(8)] == factors[:8]
    assert LONG.lr_factor(23) == 1.0 and LONG.lr_factor(29) == pytest.approx(0.1)


def test_budget_stores_its_schedule_only_when_not_the_default():
    plain = Budget(steps=10)
    assert "schedule" not in plain.to_dict() and "decay" not in plain.to_dict()
    assert Budget.from_dict(plain.to_dict()) == plain
    assert SHORT.to_dict()["schedule"] == "wsd" and Budget.from_dict(SHORT.to_dict()) == SHORT
    assert plain.decay_start is None
    with pytest.raises(BudgetError, match="schedule: expected one of cosine, wsd, constant, got 'linear'"):
        Budget(schedule="linear")
    with pytest.raises(BudgetError, match="decay"):
        Budget(schedule="wsd", decay=0)


def test_step_batches_continue_the_stream_where_it_stopped():
    stream = iter(StepBatches(20, 6, seed=3))
    first = [next(stream) for _ in range(9)]  # three per epoch: crosses two epochs
    later = iter(StepBatches(20, 6, seed=3, start=4))
    assert [next(later) for _ in range(5)] == first[4:]
    assert first[:3] != first[3:6]  # each epoch is its own permutation


def test_continued_run_equals_an_uninterrupted_run_to_the_same_step():
    """Train 10 steps (checkpoint at step 8, before the decay), continue that checkpoint to 30:
    the same weights' scores as one 30-step run. The test can fail: continuing from the decayed
    weights, or restarting the data stream, gives other scores (checked below)."""
    short = run_trial(arch(), suite(), SHORT, seed=0)
    assert short.ok, short.failure
    assert set(short.checkpoints) == {"mqar_32x4", "in_context_recall"}
    state = short.checkpoints["mqar_32x4"][SHORT.lr]
    assert state.step == 8 and state.batches == 8
    continued = run_trial(arch(), suite(), LONG, seed=0, resume=short.checkpoints)
    straight = run_trial(arch(), suite(), LONG, seed=0)
    assert continued.ok and straight.ok
    for name, task in straight.tasks.items():
        other = continued.tasks[name]
        assert other.steps == task.steps == 30
        assert other.metrics["loss"] == pytest.approx(task.metrics["loss"], rel=1e-5, abs=1e-6)
        assert other.metrics["accuracy"] == pytest.approx(task.metrics["accuracy"], abs=1e-6)
        # The continued run's curve points (every 5 of its own steps) count the run's steps.
        assert [p["step"] for p in other.curve] == [13, 18, 23, 28]
    assert continued.quality == pytest.approx(straight.quality, abs=1e-6)
    # The checkpoint of the continued run is the straight run's, at the longer decay.
    ours = continued.checkpoints["mqar_32x4"][SHORT.lr].model
    theirs = straight.checkpoints["mqar_32x4"][SHORT.lr].model
    assert all(torch.allclose(ours[k], theirs[k], atol=1e-6) for k in theirs)

    # Sensitivity: the data stream restarted at batch 0 changes the result.
    restarted = {name: {rate: dataclasses.replace(s, batches=0) for rate, s in by_rate.items()}
                 for name, by_rate in short.checkpoints.items()}
    wrong = run_trial(arch(), suite(), LONG, seed=0, resume=restarted)
    assert wrong.tasks["mqar_32x4"].metrics["loss"] != pytest.approx(
        straight.tasks["mqar_32x4"].metrics["loss"], rel=1e-5)


def test_continuing_needs_a_longer_wsd_budget():
    short = run_trial(arch(), suite(), SHORT, seed=0)
    cosine = run_trial(arch(), suite(), Budget(steps=30, batch_size=8, decode_context=0),
                       seed=0, resume=short.checkpoints)
    assert not cosine.ok and "wsd budget" in cosine.failure


# -- on a study ---------------------------------------------------------------------------------

SPACE = """
name: continued
pattern: "{A|M} {A|M}"
dims: {d_model: 16, n_heads: 2, d_state: 4}
"""
RUNGS_SPEC = (6, 12)  # decay over the last 20%: rung 0 is checkpointed at step 5


def sh_study(tmp_path, n_trials: int = 2):
    """A SQLite study as `hnas search --fidelity sh --rungs 6,12 --eta 2` stores it (wsd)."""
    from nas.definition import StudyDefinition, toolkit_versions
    from nas.rungs import Rungs
    from nas.storage import open_storage
    from nas.study import create_or_check, open_study
    from search_spaces import SearchSpace

    space, tasks, rungs = SearchSpace.from_yaml(SPACE), suite(), Rungs(RUNGS_SPEC, 2)
    budget = Budget(steps=rungs.full_steps, batch_size=8, eval_batches=1, decode_context=0,
                    schedule="wsd", warmup_steps=1)
    spec = StudyDefinition(space.to_yaml(), space.fingerprint(), tasks.to_dict(),
                           tasks.fingerprint(), budget.to_dict(), "quality,params", "random",
                           n_trials, 0, (), toolkit_versions(), fidelity=rungs.to_dict())
    url = f"sqlite:///{tmp_path / 'study.db'}"
    create_or_check("continued", open_storage(url), spec)
    study, spec = open_study("continued", open_storage(url), seed_offset=0)
    return study, spec, url


def run_study(tmp_path, on_trial=None, store: bool = True):
    from nas.continuation import artifact_store
    from nas.study import run_worker

    study, spec, url = sh_study(tmp_path)
    artifacts = artifact_store(url, None)[0] if store else None
    run_worker(study, spec, on_trial=on_trial, artifacts=artifacts)
    return study, spec


def by_rung(study):
    from optuna.trial import TrialState

    from nas.record import TrialRecord

    trials = study.get_trials(states=(TrialState.COMPLETE,))
    return {rung: [(t, TrialRecord.from_frozen_trial(t)) for t in trials
                   if TrialRecord.from_frozen_trial(t).rung == rung] for rung in (0, 1)}


def straight_loss(spec, trial) -> float:
    """The test loss of one uninterrupted wsd run of the trial's architecture to 12 steps:
    what the continued promotion must equal (the loss: accuracy on 16 test sequences is too
    coarse to tell runs apart)."""
    from nas.evaluate import Evaluator
    from nas.record import TrainedResult

    arch = ArchConfig.from_dict(trial.user_attrs["arch"])
    evaluator = Evaluator(spec)
    result = run_trial(arch, evaluator.suite, dataclasses.replace(evaluator.budget, steps=12),
                       seed=spec.seed)
    return TrainedResult.from_trial_result(result, spec.task_weights()).loss


def test_a_promotion_continues_its_parents_checkpoint_on_sqlite(tmp_path):
    study, spec = run_study(tmp_path)
    rungs = by_rung(study)
    assert len(rungs[0]) == 2 and len(rungs[1]) == 1
    folder = tmp_path / "study.db.artifacts"
    promotion, record = rungs[1][0]
    parent = study.trials[record.promoted_from]
    for trial, stored in rungs[0]:
        # the promoted parent's checkpoint is spent once the promotion is recorded; the other
        # is ruled out by results under a minute old, and kept until they settle
        assert stored.checkpoint
        assert (folder / stored.checkpoint).is_file() == (trial.number != parent.number)
    assert record.resumed_step == 5 and record.retrained is None  # trained 12 - 5 = 7 steps
    assert record.checkpoint is None  # the top rung is never continued
    assert all(task["steps"] == 12 for task in promotion.user_attrs["tasks"].values())
    assert parent.user_attrs["checkpoint"] in {r.checkpoint for _, r in rungs[0]}
    assert promotion.user_attrs["loss"] == pytest.approx(straight_loss(spec, promotion),
                                                         rel=1e-5)
    from nas.report import status

    fidelity = status(study).fidelity
    assert (fidelity.continued, fidelity.retrained, fidelity.steps_saved) == (1, 0, 5)
    assert (fidelity.checkpoints_kept, fidelity.checkpoints_removed) == (1, 1)


def test_a_missing_checkpoint_means_the_promotion_retrains(tmp_path):
    """The artifacts are deleted after every first-rung trial: the promotion trains afresh,
    says so, and (wsd) scores what the continuation would have."""
    import shutil

    def delete(study, finished):
        shutil.rmtree(tmp_path / "study.db.artifacts", ignore_errors=True)

    study, spec = run_study(tmp_path, on_trial=delete)
    promotion, record = by_rung(study)[1][0]
    assert record.resumed_step is None
    assert record.retrained.startswith(f"checkpoint of trial {record.promoted_from}: artifact ")
    assert all(task["steps"] == 12 for task in promotion.user_attrs["tasks"].values())
    assert promotion.user_attrs["loss"] == pytest.approx(straight_loss(spec, promotion),
                                                         rel=1e-5)


def test_without_a_store_promotions_retrain_and_say_so(tmp_path):
    from nas.continuation import artifact_store

    study, _ = run_study(tmp_path, store=False)
    assert by_rung(study)[1][0][1].retrained == "no artifact store"
    assert all(r.checkpoint is None for _, r in by_rung(study)[0])
    store, note = artifact_store("postgresql://u@h/db", None)
    assert store is None and "--artifacts DIR" in note
    store, note = artifact_store("postgresql://u@h/db", str(tmp_path / "shared"))
    assert note is None and (tmp_path / "shared").is_dir()


def test_hnas_search_fidelity_sh_stores_wsd_and_promotions_continue(tmp_path):
    from typer.testing import CliRunner

    from nas.cli import app
    from nas.storage import load_study, open_storage
    from nas.study import read_definition

    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "suite.yaml").write_text(
        "name: one\ntasks:\n  - task: mqar\n    n_train: 32\n    n_test: 16\n"
        "    settings: {seq_len: 16, num_kv_pairs: 2, vocab_size: 16}\n")
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    result = CliRunner().invoke(app, [
        "search", str(tmp_path / "space.yaml"), "--suite", str(tmp_path / "suite.yaml"),
        "--storage", url, "--n-trials", "2", "--fidelity", "sh", "--rungs", "10,20",
        "--eta", "2", "--batch-size", "8", "--sampler", "random", "--quiet"])
    assert result.exit_code == 0, result.output
    study = load_study("continued", open_storage(url))
    budget = Budget.from_dict(read_definition(study).budget)
    assert (budget.schedule, budget.warmup_steps, budget.decay_start) == ("wsd", 1, 16)
    promotion, record = by_rung(study)[1][0]
    assert record.resumed_step == 8 and (tmp_path / "cli.db.artifacts").is_dir()
    shown = CliRunner().invoke(app, ["status", "continued", "--storage", url])
    assert "promotions: 1 continued from a checkpoint (8 steps per task not trained again), " \
        "0 retrained" in shown.output, shown.output
    # The schedule is part of the budget the definition guard compares.
    again = CliRunner().invoke(app, [
        "search", str(tmp_path / "space.yaml"), "--suite", str(tmp_path / "suite.yaml"),
        "--storage", url, "--n-trials", "2", "--budget-steps", "20", "--batch-size", "8",
        "--quiet"])
    assert again.exit_code == 2 and "schedule" in again.output, again.output


# -- spent checkpoints are removed ---------------------------------------------------------------


@pytest.fixture
def settle_now(monkeypatch):
    """Results count at once when ruling candidates out (the default waits a minute for them
    to settle, longer than these studies take)."""
    import nas.halving
    import nas.study

    monkeypatch.setattr(nas.halving, "PRUNE_SETTLE_SECONDS", 0.0)
    monkeypatch.setattr(nas.study, "PRUNE_SETTLE_SECONDS", 0.0)


def removals(study):
    from nas.continuation import REMOVED, removed_checkpoints

    return removed_checkpoints(study._storage.get_study_system_attrs(study._study_id))


def test_a_finished_study_keeps_only_the_checkpoints_a_promotion_can_use(tmp_path, settle_now):
    """Three candidates, eta 2: the workers remove each rung-0 checkpoint once its promotion is
    recorded or its rung's promotions rule it out, mid-study; at the end none can be used."""
    from typer.testing import CliRunner

    from nas.cli import app
    from nas.continuation import artifact_store
    from nas.halving import stored_artifacts
    from nas.study import run_worker

    study, spec, url = sh_study(tmp_path, n_trials=3)
    folder = tmp_path / "study.db.artifacts"
    seen = []

    def watch(study, finished):  # after each trial: every spent checkpoint is gone already
        seen.append(sorted(path.name for path in folder.iterdir()))

    run_worker(study, spec, on_trial=watch, artifacts=artifact_store(url, None)[0])
    rungs = by_rung(study)
    assert len(rungs[0]) == 3 and rungs[1]
    continued = {record.candidate for _, record in rungs[1]}
    assert all(record.resumed_step == 5 for _, record in rungs[1])
    assert list(folder.iterdir()) == []
    stored = {artifact for trial in study.trials for artifact in stored_artifacts(trial)}
    assert stored == {record.checkpoint for _, record in rungs[0]}
    assert removals(study) == {
        record.checkpoint: {"trial": trial.number,
                            "reason": "continued to rung 1" if record.candidate in continued
                            else "not promoted from rung 0"}
        for trial, record in rungs[0]}
    assert max(len(names) for names in seen) < 3  # removed during the study, not at its end
    shown = CliRunner().invoke(app, ["status", "continued", "--storage", url])
    assert "checkpoints: 0 kept for promotions, 3 removed" in shown.output, shown.output


def hand_made_rung(tmp_path):
    """A study whose rung 0 is complete (3 candidates of 3, eta 2: one promotion), each
    candidate with a checkpoint file; trial 0 is the best, trial 2 the worst."""
    import io
    import json

    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    from nas.continuation import artifact_store
    from nas.record import TrialRecord

    study, spec, url = sh_study(tmp_path, n_trials=3)
    store = artifact_store(url, None)[0]
    for number, values in enumerate(([0.9, 100.0], [0.5, 200.0], [0.4, 300.0])):
        artifact = f"checkpoint-{number}"
        store.write(artifact, io.BytesIO(b"states"))
        record = TrialRecord(rung=0, candidate=number, checkpoint=artifact)
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, values=values, params={"x": 0},
            distributions={"x": CategoricalDistribution([0])},
            user_attrs=record.to_user_attrs(),
            system_attrs={f"artifacts:{artifact}": json.dumps({"artifact_id": artifact})}))
    return study, spec, url, store


def test_a_pending_promotion_keeps_its_checkpoint_and_a_missing_one_is_no_failure(tmp_path):
    from nas.continuation import prune_checkpoints
    from nas.halving import enqueue_promotion

    study, spec, url, store = hand_made_rung(tmp_path)
    folder = tmp_path / "study.db.artifacts"
    # Trial 2's promotion was decided when it still led (a pending WAITING trial holds it),
    # and trial 1's checkpoint is gone already (another worker removed it a moment ago).
    enqueue_promotion(study, 0, study.trials[2])
    (folder / "checkpoint-1").unlink()
    # Results under a minute old rule nobody out yet.
    assert prune_checkpoints(study, spec.rungs, store, 3).removed == ()
    pruned = prune_checkpoints(study, spec.rungs, store, 3, settle=0)
    assert [(item.trial, item.reason) for item in pruned.removed] == \
        [(1, "not promoted from rung 0")]
    assert pruned.failed == () and pruned.kept == 2
    # trial 0 leads and is not promoted yet; trial 2's promotion is pending
    assert sorted(path.name for path in folder.iterdir()) == ["checkpoint-0", "checkpoint-2"]
    assert removals(study) == {"checkpoint-1": {"trial": 1, "reason":
                                                "not promoted from rung 0"}}
    # Another worker's pass at the same moment finds nothing left to do, and fails nothing.
    assert prune_checkpoints(study, spec.rungs, store, 3, settle=0) == \
        type(pruned)(kept=2)
    # Once the pending promotion is recorded, its parent's checkpoint is spent.
    promotion = study.ask()
    study.tell(promotion, [0.95, 100.0])
    pruned = prune_checkpoints(study, spec.rungs, store, 3, settle=0)
    assert [(item.trial, item.reason) for item in pruned.removed] == [(2, "continued to rung 1")]
    assert sorted(path.name for path in folder.iterdir()) == ["checkpoint-0"]


def test_a_promotion_of_a_removed_checkpoint_retrains_and_says_why(tmp_path):
    from nas.claims import Claims
    from nas.continuation import prune_checkpoints
    from nas.evaluate import Evaluator

    study, spec, url, store = hand_made_rung(tmp_path)
    prune_checkpoints(study, spec.rungs, store, 3, settle=0)
    # the budget grew after rung 0 was decided: trial 1 is promoted after all
    evaluator = Evaluator(spec, artifacts=store)
    states, record = evaluator._parent_checkpoint(study.trials[1], Claims(study))
    assert states is None
    assert record.retrained == "checkpoint of trial 1: removed (not promoted from rung 0)"


def test_hnas_study_prune_artifacts(tmp_path, settle_now):
    from typer.testing import CliRunner

    from nas.cli import app

    study, spec, url, store = hand_made_rung(tmp_path)
    run = CliRunner().invoke
    dry = run(app, ["study", "prune-artifacts", "continued", "--storage", url, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would remove checkpoint-1 (trial 1: not promoted from rung 0)" in dry.output
    assert (tmp_path / "study.db.artifacts" / "checkpoint-1").is_file()
    done = run(app, ["study", "prune-artifacts", "continued", "--storage", url])
    assert done.exit_code == 0, done.output
    assert "removed checkpoint-2 (trial 2: not promoted from rung 0)" in done.output
    assert "2 checkpoints removed, 1 kept" in done.output
    shown = run(app, ["status", "continued", "--storage", url])
    assert "checkpoints: 1 kept for promotions, 2 removed" in shown.output, shown.output
    from nas.storage import open_storage
    from nas.study import create_or_check
    from test_study import definition

    create_or_check("plain", open_storage(url), definition())
    plain = run(app, ["study", "prune-artifacts", "plain", "--storage", url])
    assert plain.exit_code == 2 and plain.output.strip() == (
        "error: study 'plain' has no rungs (not --fidelity sh): it keeps no checkpoints")
    for args, message in (
            (["--artifacts", str(tmp_path / "nowhere")],
             f"error: --artifacts '{tmp_path / 'nowhere'}': no such folder"),
            (["--storage", f"sqlite:///{tmp_path / 'none.db'}"],
             f"error: study 'continued' not found: no database file at "
             f"'{tmp_path / 'none.db'}'")):
        refused = run(app, ["study", "prune-artifacts", "continued", "--storage", url, *args])
        assert refused.exit_code == 2 and refused.output.strip() == message, refused.output


def test_a_worker_that_cannot_remove_a_checkpoint_says_so_once_and_goes_on(tmp_path, settle_now):
    from nas.storage import Patience
    from nas.study import Worker

    class ReadOnly:
        def remove(self, artifact):
            raise PermissionError(13, "Permission denied", artifact)

    study, spec, url, store = hand_made_rung(tmp_path)
    said = []
    worker = Worker(study, spec, run=None, patience=Patience(log=said.append),
                    artifacts=ReadOnly())
    worker.prune(spec.rungs, study.get_trials(deepcopy=False))
    worker.pruned_at = None  # a trial finished meanwhile: the next pass tries again
    worker.prune(spec.rungs, study.get_trials(deepcopy=False))
    assert said == ["checkpoint checkpoint-1 of trial 1 could not be removed (Permission "
                    "denied); kept, and tried again after each trial"]
    assert removals(study) == {}
    assert (tmp_path / "study.db.artifacts" / "checkpoint-1").is_file()
