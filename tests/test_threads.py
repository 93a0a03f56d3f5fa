"""The thread rule of training processes (trials/train/threads.py): one torch thread unless
HNAS_THREADS says otherwise, applied by every command that trains."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from nas.cli import app
from trials.train import training_threads, use_training_threads
from trials.train.threads import ENV_THREADS


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("value, expected", [
    (None, 1), ("3", 3), ("0", 1), ("-2", 1), ("many", 1), ("", 1)])
def test_training_threads_reads_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(ENV_THREADS, raising=False)
    else:
        monkeypatch.setenv(ENV_THREADS, value)
    assert training_threads() == expected


def test_use_training_threads_sets_torch(monkeypatch):
    monkeypatch.delenv(ENV_THREADS, raising=False)
    torch.set_num_threads(2)
    assert use_training_threads() == 1 and torch.get_num_threads() == 1
    assert use_training_threads(2) == 2 and torch.get_num_threads() == 2
    assert use_training_threads(0) == 1  # never below one


def test_hnas_train_runs_on_one_thread(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_THREADS, raising=False)
    torch.set_num_threads(2)
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: tiny\ntasks:\n  - task: mqar\n    n_train: 16\n    n_test: 8\n"
                     "    settings: {seq_len: 16, num_kv_pairs: 2, vocab_size: 16}\n")
    result = CliRunner().invoke(app, ["train", "M", "--suite", str(suite), "--steps", "1",
                                      "--batch-size", "4", "--d-model", "16", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["device"] == "cpu (1 threads)"


def test_run_trial_warns_once_about_torch_default_threads(monkeypatch, tmp_path):
    import warnings

    from search_spaces import ArchConfig
    from trials.tasks import Suite
    from trials.train import Budget, run_trial, threads

    suite = Suite.from_yaml("name: tiny\ntasks:\n  - task: mqar\n    n_train: 16\n    n_test: 8\n"
                            "    settings: {seq_len: 16, num_kv_pairs: 2, vocab_size: 16}\n")
    arch = ArchConfig.from_pattern("A", d_model=16, n_heads=2, vocab_size=16)
    budget = Budget(steps=1, batch_size=4, decode_context=0)

    def warnings_of_a_trial() -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_trial(arch, suite, budget)
        return [str(w.message) for w in caught if "trains on" in str(w.message)]

    monkeypatch.delenv(ENV_THREADS, raising=False)
    monkeypatch.setattr(threads, "_warned", False)
    torch.set_num_threads(1)
    assert warnings_of_a_trial() == []  # the rule's one thread
    torch.set_num_threads(2)
    (message,) = warnings_of_a_trial()
    assert "torch trains on 2 threads" in message and "use_training_threads()" in message
    assert warnings_of_a_trial() == []  # once per process
    monkeypatch.setattr(threads, "_warned", False)
    monkeypatch.setenv(ENV_THREADS, "2")  # chosen: no warning
    assert warnings_of_a_trial() == []
