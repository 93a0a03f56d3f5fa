"""Learning-rate sweeps: a budget with several peak rates trains every task once per rate and
keeps its best run (MAD's protocol), through run_trial, `hnas train` and `hnas search`."""

from __future__ import annotations

import json

import optuna
import pytest
from typer.testing import CliRunner

from nas.cli import app
from search_spaces import ArchConfig
from trials.tasks import MQAR, Suite, SuiteEntry
from trials.train import Budget, BudgetError, TaskResult, run_trial
from trials.train import run as train_run
from trials.train.budget import DEFAULT_LR
from trials.train.module import NonFiniteLoss

SUITE_YAML = """
name: tiny
tasks:
  - task: mqar
    n_train: 64
    n_test: 16
    settings: {seq_len: 32, num_kv_pairs: 4, vocab_size: 32}
"""


def tiny_suite() -> Suite:
    return Suite("tiny", (SuiteEntry(MQAR(seq_len=32, num_kv_pairs=4, vocab_size=32),
                                     n_train=64, n_test=16),))


def small_arch() -> ArchConfig:
    return ArchConfig.from_pattern("M A", d_model=32, n_heads=2, d_state=4)


def budget(lr) -> Budget:
    return Budget(steps=6, batch_size=8, eval_every=3, decode_context=0, lr=lr)


def test_budget_holds_one_rate_or_a_sweep():
    assert Budget().lr == DEFAULT_LR == 1e-3 and Budget().rates == (1e-3,)
    sweep = Budget(lr=[1e-3, 3e-3])
    assert sweep.lr == (1e-3, 3e-3) and sweep.rates == (1e-3, 3e-3)
    assert sweep.at_rate(3e-3).lr == 3e-3 and sweep.at_rate(3e-3).steps == sweep.steps
    # A sweep of one rate is that rate, so that equal budgets are stored alike.
    assert Budget(lr=[2e-3]).lr == 2e-3 and Budget(lr=(2e-3,)) == Budget(lr=2e-3)
    # Stored studies keep the budget as JSON, where the tuple comes back as a list.
    assert Budget.from_dict(json.loads(json.dumps(sweep.to_dict()))) == sweep


def test_cli_help_names_the_budgets_default_rate():
    # The CLI's help is written without importing trials (torch stays out of `hnas --help`):
    # this keeps its default from drifting away from the budget's.
    import re

    from nas.cli.common import LR_HELP
    from trials.tasks.suite import RECALL64_TRAINING

    (calibrated,) = re.findall(r"([0-9.e-]+) held constant on recall64", LR_HELP)
    (otherwise,) = re.findall(r"otherwise ([0-9.e-]+) with", LR_HELP)
    assert float(calibrated) == RECALL64_TRAINING.lr and RECALL64_TRAINING.schedule == "constant"
    assert float(otherwise) == DEFAULT_LR


@pytest.mark.parametrize("lr, message", [
    ((), "lr: give at least one learning rate"),
    ((1e-3, -1.0), "lr: expected a positive number, got -1.0"),
    ((1e-3, float("nan")), "lr: expected a positive number, got nan"),
    ((1e-3, True), "lr: expected a positive number, got True"),
    ((1e-3, "3e-3"), "lr: expected a positive number, got '3e-3'"),
    ((1e-3, 3e-3, 1e-3), r"lr: the sweep \[0.001, 0.003, 0.001\] names a rate twice"),
])
def test_bad_sweeps_name_the_field(lr, message):
    with pytest.raises(BudgetError, match=message):
        Budget(lr=lr)


def test_sweep_keeps_the_best_run_of_each_task():
    rates = (1e-3, 3e-2)
    result = run_trial(small_arch(), tiny_suite(), budget(rates), seed=0)
    assert result.ok, result.failure
    task = result.tasks["mqar_32x4"]
    assert [run["lr"] for run in task.sweep] == list(rates)
    assert all(run["failure"] is None and run["steps"] == 6 for run in task.sweep)
    best = max(task.sweep, key=lambda run: (run["accuracy"], -run["loss"]))
    assert task.lr == best["lr"]
    assert task.metrics["accuracy"] == best["accuracy"] and task.metrics["loss"] == best["loss"]
    assert result.quality == task.metrics["accuracy"]
    # The kept run is the one a single-rate budget at that rate trains (same seed, same data).
    alone = run_trial(small_arch(), tiny_suite(), budget(task.lr), seed=0).tasks["mqar_32x4"]
    assert alone.metrics == task.metrics and alone.curve == task.curve
    assert alone.lr == task.lr and alone.sweep == []
    # The other rate trained a different model: the sweep compared two real runs.
    other = next(run for run in task.sweep if run["lr"] != task.lr)
    assert (other["accuracy"], other["loss"]) != (best["accuracy"], best["loss"])


def fake_runs(outcomes: dict[float, tuple[float, float] | int], trained: list[float]):
    """A train_task that returns the given (accuracy, loss) per rate, or a NaN loss at step k."""

    def fake(arch, train, test, budget, seed, accelerator, precision, name, resume=None):
        trained.append(budget.lr)
        outcome = outcomes[budget.lr]
        if isinstance(outcome, int):
            raise NonFiniteLoss(outcome)
        accuracy, loss = outcome
        task = TaskResult(name=name, metrics={"accuracy": accuracy, "loss": loss}, steps=6,
                          train_seconds=2.0, tokens_per_s=100.0 * budget.lr * 1000, lr=budget.lr)
        return task, f"model at {budget.lr:g}"

    return fake


def test_ties_go_to_the_lower_loss_then_the_earlier_rate(monkeypatch):
    trained = []
    outcomes = {1e-3: (0.5, 1.0), 2e-3: (0.5, 0.8), 3e-3: (0.4, 0.1), 4e-3: (0.5, 0.8)}
    monkeypatch.setattr(train_run, "train_task", fake_runs(outcomes, trained))
    task, model = train_run.sweep_task(None, None, None, budget(tuple(outcomes)), 0, "cpu",
                                       "32-true", "t")
    assert trained == list(outcomes)
    assert task.lr == 2e-3 and model == "model at 0.002"
    assert task.metrics == {"accuracy": 0.5, "loss": 0.8}
    # The cost covers every run: four runs of 2 s, tokens/s their time-weighted mean.
    assert task.train_seconds == 8.0 and task.tokens_per_s == pytest.approx(250.0)


def test_a_nan_loss_fails_only_its_rate(monkeypatch):
    trained = []
    outcomes = {1e-3: (0.3, 2.0), 1e-1: 4}
    monkeypatch.setattr(train_run, "train_task", fake_runs(outcomes, trained))
    task, _ = train_run.sweep_task(None, None, None, budget((1e-3, 1e-1)), 0, "cpu", "32-true",
                                   "t")
    assert task.lr == 1e-3 and task.metrics["accuracy"] == 0.3
    assert task.sweep[1] == {"lr": 1e-1, "accuracy": None, "loss": None, "steps": 4,
                             "failure": "nan_loss at step 4"}


def test_a_candidate_fails_when_every_rate_does(monkeypatch):
    monkeypatch.setattr(train_run, "train_task", fake_runs({1e-2: 5, 1e-1: 2}, []))
    result = run_trial(small_arch(), tiny_suite(), budget((1e-2, 1e-1)))
    assert not result.ok and result.failure == "nan_loss at step 5"


def test_other_errors_end_the_sweep_at_once(monkeypatch):
    calls = []

    def explode(*args, **kwargs):
        calls.append(1)
        raise MemoryError()

    monkeypatch.setattr(train_run, "train_task", explode)
    result = run_trial(small_arch(), tiny_suite(), budget((1e-3, 3e-3)))
    assert result.failure == "oom" and len(calls) == 1


def test_hnas_train_sweeps_with_repeated_lr(tmp_path):
    (tmp_path / "suite.yaml").write_text(SUITE_YAML)
    args = ["train", "M A", "--d-model", "32", "--suite", str(tmp_path / "suite.yaml"),
            "--steps", "3", "--batch-size", "8", "--lr", "1e-3", "--lr", "3e-2"]
    result = CliRunner().invoke(app, args + ["--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["budget"]["lr"] == [1e-3, 3e-2]
    task = data["tasks"]["mqar_32x4"]
    assert [run["lr"] for run in task["sweep"]] == [1e-3, 3e-2] and task["lr"] in (1e-3, 3e-2)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "(best of 0.001, 0.03)" in result.output


@pytest.mark.parametrize("rates, message", [
    (["0"], "error: lr: expected a positive number, got 0.0"),
    (["1e-3", "1e-3"], "error: lr: the sweep [0.001, 0.001] names a rate twice"),
])
def test_bad_learning_rates_are_one_line_errors(rates, message):
    args = ["train", "A", "--steps", "2"]
    for rate in rates:
        args += ["--lr", rate]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and result.output.strip() == message


def test_search_stores_the_sweep_and_each_tasks_rates(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(
        "name: tiny\npattern: \"{A|M}\"\ndims: {d_model: 16, n_heads: 2, d_state: 4}\n")
    (tmp_path / "suite.yaml").write_text(SUITE_YAML)
    result = CliRunner().invoke(app, [
        "search", "space.yaml", "--study", "sweep", "--suite", "suite.yaml", "--n-trials", "1",
        "--budget-steps", "2", "--batch-size", "8", "--lr", "1e-3", "--lr", "3e-3", "--quiet"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="sweep", storage="sqlite:///hnas.db")
    assert study.user_attrs["budget"]["lr"] == [1e-3, 3e-3]
    (trial,) = study.get_trials()
    task = trial.user_attrs["tasks"]["mqar_32x4"]
    assert [run["lr"] for run in task["sweep"]] == [1e-3, 3e-3] and task["lr"] in (1e-3, 3e-3)
    # Resuming rebuilds the same budget from the stored JSON: no "budget changed" refusal.
    result = CliRunner().invoke(app, ["resume", "sweep", "--n-trials", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    # Status says how often each rate won: once per task of every trial that was trained.
    trained = [t for t in study.get_trials() if "duplicate_of" not in t.user_attrs]
    won = [t.user_attrs["tasks"]["mqar_32x4"]["lr"] for t in trained]
    result = CliRunner().invoke(app, ["status", "sweep", "--json"])
    assert result.exit_code == 0, result.output
    training = json.loads(result.output)["training"]
    assert training["suite"] == "tiny" and training["lr"] == [1e-3, 3e-3]
    assert training["best_lr_counts"] == {"0.001": won.count(1e-3), "0.003": won.count(3e-3)}
    result = CliRunner().invoke(app, ["status", "sweep"])
    assert "training: suite tiny, 2 steps per task, batch 8, lr sweep 0.001, 0.003 (best run " \
           f"of a task: 0.001 x{won.count(1e-3)}, 0.003 x{won.count(3e-3)})" in \
           " ".join(result.output.split())
