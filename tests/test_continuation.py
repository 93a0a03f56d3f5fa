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
    with pytest.raises(BudgetError, match="schedule: expected one of cosine, wsd, got 'linear'"):
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
    for trial, record in rungs[0]:
        assert record.checkpoint and (folder / record.checkpoint).is_file()
    promotion, record = rungs[1][0]
    parent = study.trials[record.promoted_from]
    assert record.resumed_step == 5 and record.retrained is None  # trained 12 - 5 = 7 steps
    assert record.checkpoint is None  # the top rung is never continued
    assert all(task["steps"] == 12 for task in promotion.user_attrs["tasks"].values())
    assert parent.user_attrs["checkpoint"] in {r.checkpoint for _, r in rungs[0]}
    assert promotion.user_attrs["loss"] == pytest.approx(straight_loss(spec, promotion),
                                                         rel=1e-5)
    from nas.report import status

    fidelity = status(study).fidelity
    assert (fidelity.continued, fidelity.retrained, fidelity.steps_saved) == (1, 0, 5)


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
