"""Brief training with Lightning: run_trial end to end, failures as data, hnas train."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from typer.testing import CliRunner

from nas.cli import app
from search_spaces import ArchConfig, load_arch
from trials.tasks import MQAR, InContextRecall, Suite, SuiteEntry
from trials.train import Budget, BudgetError, TrialResult, run_trial
from trials.train import module as train_module
from trials.train import run as train_run

TINY = Budget(steps=6, batch_size=8, eval_every=3, decode_context=8)


def tiny_suite() -> Suite:
    return Suite(name="tiny", entries=(
        SuiteEntry(task=MQAR(seq_len=32, num_kv_pairs=4, vocab_size=32), n_train=64, n_test=16,
                   weight=2.0),
        SuiteEntry(task=InContextRecall(seq_len=32), n_train=64, n_test=16),
    ))


def small_arch() -> ArchConfig:
    return ArchConfig.from_pattern("M A", d_model=32, n_heads=2, d_state=4)


def test_run_trial_reports_metrics_curve_and_costs():
    result = run_trial(small_arch(), tiny_suite(), TINY, seed=0)
    assert result.ok, result.failure
    assert set(result.tasks) == {"mqar_32x4", "in_context_recall"}
    for task in result.tasks.values():
        assert task.steps == 6
        assert [point["step"] for point in task.curve] == [3, 6]
        assert 0.0 <= task.metrics["accuracy"] <= 1.0 and task.metrics["loss"] > 0
        assert task.tokens_per_s > 0
    accuracies = [result.tasks[n].metrics["accuracy"] for n in ("mqar_32x4", "in_context_recall")]
    assert result.quality == pytest.approx((2 * accuracies[0] + accuracies[1]) / 3)
    assert result.analytic["params"] > 0 and result.analytic["context"] == 32
    assert result.measured["train_tokens_per_s"] > 0
    assert result.measured["decode_ms_per_token"] > 0 and result.measured["decode_context"] == 8
    assert result.measured["peak_memory_bytes"] > 0
    assert result.device.startswith("cpu") and result.precision == "32-true"
    assert result.kernels and result.budget["steps"] == 6


@pytest.mark.parametrize("context, decode_prefix, stepped_from", [
    (128, False, 108),  # 16 timed after 4 untimed, from a state moved to position 108
    (128, True, 0),     # the whole prefix decoded
    (10, False, 0),     # shorter than timed + warm steps: from the start
])
def test_decode_latency_steps_only_the_tokens_it_needs(monkeypatch, context, decode_prefix,
                                                       stepped_from):
    from trials.builder import build_model
    from trials.model import HybridLM
    from trials.train.measure import decode_ms_per_token

    model = build_model(ArchConfig.from_pattern("A H M", d_model=32, n_heads=2, d_state=4,
                                                hyena_filter_dim=8), seed=0)
    positions = []
    step = HybridLM.step

    def counted(self, tokens_t, state):
        positions.append(state[0]["pos"])  # the A layer's cache position
        return step(self, tokens_t, state)

    monkeypatch.setattr(HybridLM, "step", counted)
    assert decode_ms_per_token(model, context, torch.device("cpu"),
                               decode_prefix=decode_prefix) > 0
    assert positions == list(range(stepped_from, context))
    assert model.training  # left as it was found


def test_a_cpu_trial_keeps_the_memory_it_frees(monkeypatch):
    kept = []
    monkeypatch.setattr(train_run, "keep_freed_memory", lambda: kept.append(True) or True)
    assert run_trial(small_arch(), tiny_suite(), TINY, seed=0).ok
    assert kept == [True]


def test_same_seed_same_result():
    first = run_trial(small_arch(), tiny_suite(), TINY, seed=1)
    second = run_trial(small_arch(), tiny_suite(), TINY, seed=1)
    assert first.quality == second.quality
    assert first.tasks["mqar_32x4"].curve == second.tasks["mqar_32x4"].curve


def test_result_round_trips_through_json():
    result = run_trial(small_arch(), tiny_suite(), TINY, seed=0)
    again = TrialResult.from_dict(json.loads(result.to_json()))
    assert again == result


def test_nan_loss_is_a_failed_result_naming_the_step(monkeypatch):
    real = train_module.masked_cross_entropy
    calls = {"n": 0}

    def poisoned(logits, targets, mask):
        calls["n"] += 1
        loss = real(logits, targets, mask)
        return loss * math.nan if calls["n"] == 3 else loss

    monkeypatch.setattr(train_module, "masked_cross_entropy", poisoned)
    result = run_trial(small_arch(), tiny_suite(), TINY)
    assert not result.ok and result.failure == "nan_loss at step 2"
    assert result.quality is None


def side_by_side_spy(monkeypatch) -> list[int]:
    """Counts the trials whose tasks went to child processes."""
    calls = []
    real = train_run.run_in_children

    def spy(jobs, processes):
        calls.append(processes)
        yield from real(jobs, processes)

    monkeypatch.setattr(train_run, "run_in_children", spy)
    return calls


def test_tasks_side_by_side_give_the_result_of_tasks_in_turn(monkeypatch):
    in_turn = run_trial(small_arch(), tiny_suite(), TINY, seed=0)
    calls = side_by_side_spy(monkeypatch)
    side_by_side = run_trial(small_arch(), tiny_suite(), TINY, seed=0, processes=4)
    assert calls == [2]  # one process per task, not more
    assert side_by_side.ok, side_by_side.failure
    assert list(side_by_side.tasks) == list(in_turn.tasks)  # the suite's order
    for name, task in in_turn.tasks.items():
        other = side_by_side.tasks[name]
        assert (other.metrics, other.curve, other.steps) == (task.metrics, task.curve, task.steps)
    assert side_by_side.quality == in_turn.quality
    assert side_by_side.kernels == in_turn.kernels
    assert side_by_side.measured["decode_ms_per_token"] > 0
    assert side_by_side.measured["decode_context"] == 8
    assert side_by_side.measured["peak_memory_bytes"] > 0


def test_a_nan_loss_in_one_task_process_fails_the_trial_and_keeps_the_other(monkeypatch):
    real = train_module.masked_cross_entropy
    calls = {"n": 0}

    def poisoned(logits, targets, mask):  # the MQAR task only: its vocabulary is 32
        calls["n"] += logits.shape[-1] == 32
        loss = real(logits, targets, mask)
        return loss * math.nan if calls["n"] == 3 else loss

    monkeypatch.setattr(train_module, "masked_cross_entropy", poisoned)  # forked: the children too
    calls_side_by_side = side_by_side_spy(monkeypatch)
    result = run_trial(small_arch(), tiny_suite(), TINY, processes=2)
    assert calls_side_by_side == [2]
    assert not result.ok and result.failure == "nan_loss at step 2"
    assert list(result.tasks) == ["in_context_recall"] and result.quality is None


def test_a_task_process_killed_by_the_os_is_a_one_line_failure(monkeypatch):
    import signal

    parent, real = os.getpid(), train_run.build_model

    def killed_in_a_child(*args, **kwargs):  # as the OOM killer would
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    monkeypatch.setattr(train_run, "build_model", killed_in_a_child)
    result = run_trial(small_arch(), tiny_suite(), TINY, processes=2)
    assert result.status == "failed"
    assert result.failure == ("TaskProcessDied: a task's training process was killed by a "
                              "signal before it finished (the kernel's OOM killer, if memory "
                              "ran out)")


def test_tasks_run_in_turn_where_a_fork_would_not_be_safe(monkeypatch):
    from trials.train.task_processes import task_processes

    assert task_processes(3, None) == min(3, len(os.sched_getaffinity(0)))
    assert task_processes(3, 2) == 2 and task_processes(1, 8) == 1
    torch.set_num_threads(2)  # an OpenMP team could exist: no fork
    try:
        assert task_processes(3, 2) == 1
        calls = side_by_side_spy(monkeypatch)
        with pytest.warns(RuntimeWarning, match="threads"):
            result = run_trial(small_arch(), tiny_suite(), TINY, processes=2)
        assert result.ok and calls == []
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("error, reason", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "oom"),
    (MemoryError(), "oom"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes. "
                  "Error code 12 (Cannot allocate memory) out of memory"), "oom"),
    (ValueError("something odd\nwith a second line"), "ValueError: something odd"),
    (KeyError("x"), "KeyError: 'x'"),
])
def test_exceptions_inside_a_candidate_become_failed_results(monkeypatch, error, reason):
    def explode(*args, **kwargs):
        raise error

    monkeypatch.setattr(train_run, "build_model", explode)
    result = run_trial(small_arch(), tiny_suite(), TINY)
    assert result.status == "failed" and result.failure == reason


def test_budget_validation_names_the_field():
    with pytest.raises(BudgetError, match="budget: give steps, seconds or both"):
        Budget(steps=None, seconds=None)
    with pytest.raises(BudgetError, match="lr: expected a positive number"):
        Budget(lr=0)
    with pytest.raises(BudgetError, match="batch_size: expected a positive integer"):
        Budget(batch_size=0)
    with pytest.raises(BudgetError, match="stepz: unknown budget setting"):
        Budget.from_dict({"stepz": 3})


def test_learning_rate_warms_up_then_decays():
    budget = Budget(steps=100, warmup=0.1, min_lr_ratio=0.1)
    factors = [budget.lr_factor(step) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    assert factors[-1] == pytest.approx(0.1, abs=0.01)


def test_constant_schedule_holds_the_peak_after_warm_up():
    budget = Budget(steps=50, warmup_steps=5, schedule="constant")
    factors = [budget.lr_factor(step) for step in range(50)]
    assert factors[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert factors[5:] == [1.0] * 45 and budget.decay_start is None
    assert Budget.from_dict(budget.to_dict()) == budget


def test_time_budget_stops_training():
    result = run_trial(small_arch(), tiny_suite(), Budget(steps=None, seconds=1.5, batch_size=8,
                                                          decode_context=0))
    assert result.ok, result.failure
    assert all(task.steps >= 1 for task in result.tasks.values())
    assert all(task.train_seconds < 10 for task in result.tasks.values())


def test_hnas_train_prints_a_table_and_json(tmp_path):
    runner = CliRunner()
    config = tmp_path / "arch.yaml"
    config.write_text(small_arch().to_yaml())
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: tiny\ntasks:\n"
        "  - task: mqar\n    n_train: 32\n    n_test: 8\n"
        "    settings: {seq_len: 32, num_kv_pairs: 4, vocab_size: 32}\n")
    result = runner.invoke(app, ["train", str(config), "--suite", str(suite), "--steps", "3",
                                 "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    assert "mqar_32x4" in result.output and "quality" in result.output
    result = runner.invoke(app, ["train", "A", "--suite", str(suite), "--steps", "2",
                                 "--batch-size", "8", "--d-model", "32", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["status"] == "ok" and data["pattern"] == "A"


@pytest.mark.parametrize("args, message", [
    (["train", "A", "--suite", "nope"], "error: "),
    (["train", "A", "--steps", "0"], "error: steps: expected a positive integer"),
    (["train", "(A", "--steps", "2"], "error: pattern '(A': col 3"),
    (["train", "A", "--processes", "0"], "error: --processes: expected at least 1, got 0"),
])
def test_hnas_train_user_errors_are_one_line(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.output.strip().startswith(message) and len(result.output.strip().splitlines()) == 1


def test_quick_preset_suite_runs_end_to_end():
    result = run_trial(load_arch("jamba"), "quick", Budget(steps=4, batch_size=8, decode_context=4))
    assert result.ok, result.failure
    assert result.suite == "quick" and len(result.tasks) >= 2
    assert 0.0 <= result.quality <= 1.0


@pytest.mark.parametrize("eval_batches", [None, 1])
def test_final_metrics_score_the_whole_test_set_once(monkeypatch, eval_batches):
    """The last curve point, when it covered the whole test set at the last step, is the final
    score; a curve point on part of the test set is not, and the test set is scored again."""
    # 130 test sequences: three validation batches of 64, so eval_batches=1 sees part of them.
    suite = Suite(name="t", entries=(SuiteEntry(MQAR(seq_len=32, num_kv_pairs=4, vocab_size=32),
                                                n_train=64, n_test=130),))
    train, test = suite.data("mqar_32x4")
    budget = Budget(steps=6, batch_size=8, eval_every=3, eval_batches=eval_batches,
                    decode_context=0)
    calls = []
    real_evaluate = train_run.evaluate
    monkeypatch.setattr(train_run, "evaluate", lambda *a: calls.append(1) or real_evaluate(*a))
    result, model = train_run.train_task(small_arch(), train, test, budget, 0, "cpu",
                                         "32-true", "mqar")
    assert result.metrics["n_scored"] == int(test.score_mask.sum())
    assert len(calls) == (0 if eval_batches is None else 1)
    expected = real_evaluate(model, test, 64, torch.device("cpu"))
    assert result.metrics["accuracy"] == pytest.approx(expected["accuracy"])
    assert result.metrics["loss"] == pytest.approx(expected["loss"], rel=1e-5)


def test_precision_can_be_overridden():
    # How benchmarks/gpu_quick.py compares bf16 with fp32 on one device; bf16 autocast on the
    # CPU exercises the same override here.
    result = run_trial(small_arch(), tiny_suite(), TINY, precision="bf16-mixed")
    assert result.ok, result.failure
    assert result.precision == "bf16-mixed" and result.device.startswith("cpu")
    fp32 = run_trial(small_arch(), tiny_suite(), TINY)
    # Same seed and data: only the arithmetic differs, and with it the losses.
    assert fp32.precision == "32-true"
    assert fp32.tasks["mqar_32x4"].metrics["loss"] != result.tasks["mqar_32x4"].metrics["loss"]


def test_suite_option_help_names_every_preset_suite():
    from trials.tasks.suite import PRESETS

    for command in ("train", "search"):
        result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0
        for name in PRESETS:
            assert name in result.output, (command, name)
