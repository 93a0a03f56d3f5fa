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
