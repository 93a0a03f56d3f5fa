"""nas.report on hand-made studies: the edges of a study's records (a trial that failed without
saying why, a rung the study does not have) end in a status or one line, never a traceback."""

from __future__ import annotations

import json
import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState
from typer.testing import CliRunner

from nas import report
from nas.cli import app
from nas.record import TrainedResult, TrialRecord
from nas.storage import open_storage
from nas.study import create_or_check
from search_spaces.errors import UserError

from test_study import definition


@pytest.fixture
def url(tmp_path):
    return f"sqlite:///{tmp_path / 'study.db'}"


def add(study, record: TrialRecord, state=TrialState.COMPLETE, values=None) -> None:
    study.add_trial(optuna.trial.create_trial(
        state=state, values=values, params={"x": 0},
        distributions={"x": CategoricalDistribution([0])}, user_attrs=record.to_user_attrs()))


def test_a_trial_failed_after_its_result_was_written_is_lost_not_measured(url):
    # A worker killed between writing the result and Optuna's tell: the heartbeat fails the
    # trial, which keeps a result whose `failure` is null. It runs again, as any lost trial.
    study, _ = create_or_check("s", open_storage(url), definition())
    add(study, TrialRecord(pattern="A M", result=TrainedResult(quality=0.5, loss=1.0)),
        state=TrialState.FAIL)
    add(study, TrialRecord(pattern="M M", result=TrainedResult(failure="nan_loss at step 3")),
        state=TrialState.FAIL)
    summary = report.status(study)
    assert summary.failures == {"nan_loss": 1}
    assert summary.lost == {"worker died after training": 1}
    assert summary.measured == 1


def test_lost_trials_say_why_they_run_again(url):
    study, _ = create_or_check("s", open_storage(url), definition())
    add(study, TrialRecord(pattern="A M", interrupted=True), state=TrialState.FAIL)
    add(study, TrialRecord(pattern="M M", copied_running=True), state=TrialState.FAIL)
    add(study, TrialRecord(pattern="M A"), state=TrialState.FAIL)
    assert report.status(study).lost == {"interrupted": 1, "copied while running": 1,
                                         "worker died": 1}


def test_a_rung_of_a_plain_study_is_a_user_error(url):
    study, _ = create_or_check("s", open_storage(url), definition())
    with pytest.raises(UserError, match="--rung 1: study 's' has no rungs"):
        report.shown_rung(study, study.get_trials(), 1)
    for command in ("status", "pareto"):
        result = CliRunner().invoke(app, [command, "s", "--storage", url, "--rung", "1"])
        assert result.exit_code == 2, result.output
        assert result.output.strip() == "error: --rung 1: study 's' has no rungs (every " \
                                        "candidate trained the full budget)"


@pytest.mark.parametrize("command", ["trials", "pareto"])
def test_a_table_of_no_trials_has_the_same_columns_in_csv(url, command):
    create_or_check("s", open_storage(url), definition())
    result = CliRunner().invoke(app, [command, "s", "--storage", url, "--csv"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [",".join(report.EMPTY_COLUMNS)]


def test_rows_without_a_rung_before_rows_with_one(url):
    # In a study with rungs, a trial still waiting has no rung yet while measured ones have.
    from test_halving import sh_definition

    study, _ = create_or_check("sh", open_storage(url), sh_definition())
    study.enqueue_trial({"x": 0})
    add(study, TrialRecord(pattern="A", rung=0, candidate=1,
                           result=TrainedResult(quality=0.5, device="cpu")), values=[0.5, 100.0])
    result = CliRunner().invoke(app, ["trials", "sh", "--storage", url, "--csv"])
    assert result.exit_code == 0, result.output
    header, waiting, measured = result.output.splitlines()
    assert header.endswith(",rung") and waiting.endswith(",") and measured.endswith(",0")
    table = CliRunner().invoke(app, ["trials", "sh", "--storage", url])
    assert "rung" in table.output.splitlines()[2]
    shown = json.loads(CliRunner().invoke(app, ["trials", "sh", "--storage", url,
                                                "--json"]).output)
    assert [row["rung"] for row in shown] == [None, 0]


@pytest.mark.parametrize("command", [["status"], ["status", "--rung", "1"], ["pareto"],
                                     ["pareto", "--json"]])
def test_status_and_pareto_parse_each_trial_once(url, monkeypatch, command):
    """Each command reads every trial's record once and passes it along (the reports asked
    for it up to eight times a trial: counting, the rung, the front, each row)."""
    from collections import Counter

    from test_halving import RungRun, sh_definition

    from nas.study import run_worker

    spec = sh_definition(n_trials=6)
    study, _ = create_or_check("sh", open_storage(url), spec)
    run_worker(study, spec, run=RungRun())
    parses = Counter()
    parse = TrialRecord.from_user_attrs.__func__

    def counting(cls, attrs):
        parses[id(attrs)] += 1
        return parse(cls, attrs)

    monkeypatch.setattr(TrialRecord, "from_user_attrs", classmethod(counting))
    result = CliRunner().invoke(app, [*command[:1], "sh", "--storage", url, *command[1:]])
    assert result.exit_code == 0, result.output
    assert len(parses) == len(study.trials) and set(parses.values()) == {1}, parses
