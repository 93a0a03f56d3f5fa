"""The trial record: one schema, one writer, one reader, and studies written before it still read.

`tests/data/format1_study.db` was written by the code before `nas.record` existed
(`tests/data/make_format1_study.py`), with what that code's reports said of it beside it in
`format1_study.json`.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from nas import record as record_module
from nas import report
from nas.record import KEYS, DamagedRecord, TaskRecord, TrainedResult, TrialRecord, check_attrs
from nas.snapshot import read_study
from nas.storage import load_study, open_storage

DATA = Path(__file__).parent / "data"
ROOT = Path(__file__).parent.parent


@pytest.fixture
def old_url(tmp_path):
    """A copy of the old-format database (SQLite writes beside a file it opens)."""
    path = tmp_path / "format1.db"
    shutil.copy(DATA / "format1_study.db", path)
    return f"sqlite:///{path}"


@pytest.mark.parametrize("name", ["format1", "format1_baseline"])
def test_a_study_written_by_the_old_format_reads_the_same(old_url, name):
    expected = json.loads((DATA / "format1_study.json").read_text())[name]
    for study in (read_study(name, old_url), load_study(name, open_storage(old_url))):
        objectives = report.objectives_of(study)
        as_json = json.loads(json.dumps(report.status(study).to_dict(), default=str))
        assert as_json == expected["status"]
        assert [row.to_dict() for row in report.trial_rows(study)] == expected["trials"]
        assert [report.trial_row(t, objectives).to_dict()
                for t in report.pareto_front(study)] == expected["pareto"]


def test_every_old_trial_round_trips_through_the_record(old_url):
    """Reading a stored trial and writing its record gives back exactly its attributes: the
    writer keeps the format, so old and new trials sit side by side in one study."""
    kinds = set()
    for name in ("format1", "format1_baseline"):
        for trial in read_study(name, old_url).get_trials():
            record = TrialRecord.from_frozen_trial(trial)
            assert record.to_user_attrs() == trial.user_attrs, trial.number
            kinds |= {key for key in KEYS if key in trial.user_attrs}
    # The file has every key but `surplus` (two workers racing for the last slot), the
    # successive-halving keys (a study with rungs: tests/test_halving.py) and `copied_running`
    # (written by `hnas study copy`: tests/test_study_copy.py).
    assert kinds == set(KEYS) - {record_module.SURPLUS, record_module.COPIED_RUNNING} \
        - set(record_module.RUNG_KEYS)


def test_the_record_reads_what_it_says():
    trial_result = _trial_result()
    result = TrainedResult.from_trial_result(trial_result, {"a": 3.0})
    assert result.loss == pytest.approx((3 * 0.5 + 1 * 1.0) / 4)  # "b" has weight 1
    assert result.tasks["a"] == TaskRecord({"accuracy": 0.5, "loss": 0.5}, 7, 10.0, [], None,
                                           1e-3, [])
    record = TrialRecord(pattern="A M", fingerprint="f", result=result, wall_seconds=2.0,
                         duplicate_of=3, baseline="griffin")
    back = TrialRecord.from_user_attrs(json.loads(json.dumps(record.to_user_attrs())))
    assert back == record and back.has_result and back.failure is None
    failed = record.with_failure("non-finite objective loss")
    assert failed.failure == "non-finite objective loss" and not failed.result.ok
    # A partial record writes only its own keys; flags only when set.
    assert TrialRecord(interrupted=True).to_user_attrs() == {record_module.INTERRUPTED: True}
    assert TrialRecord().to_user_attrs() == {} and not TrialRecord().has_result


def test_a_damaged_attribute_is_named():
    with pytest.raises(DamagedRecord, match="'duplicate_of' is 'x', expected a number"):
        check_attrs({record_module.DUPLICATE_OF: "x"})
    with pytest.raises(DamagedRecord, match="'interrupted' is 1, expected true or false"):
        check_attrs({record_module.INTERRUPTED: 1})
    check_attrs({record_module.LOSS: None, "someone_elses": [1]})


def test_each_attribute_key_is_written_in_one_module_only():
    """`grep` finds each key as a string literal in nas/record.py only. Six keys are also
    ordinary words of other outputs (a cost report's pattern, a task's loss, a column of
    `hnas studies`); those may appear in the commands that print such outputs, never in a
    module that reads trials."""
    other_words = {"pattern": {"nas/cli/cost.py", "nas/cli/space.py"},
                   "arch": {"nas/cli/space.py"},
                   "fingerprint": {"nas/cli/cost.py", "nas/cli/space.py"},
                   "loss": {"nas/cli/train.py"}, "measured": {"nas/cli/studies.py"},
                   "tasks": {"nas/definition.py"}}  # a stored suite's list of tasks
    sources = {str(path.relative_to(ROOT)): path.read_text()
               for path in sorted((ROOT / "nas").rglob("*.py"))}
    for key in KEYS:
        literal = re.compile(rf"""["']{re.escape(key)}["']""")
        found = {name for name, text in sources.items() if literal.search(text)}
        assert found - other_words.get(key, set()) == {"nas/record.py"}, key


def _trial_result():
    from trials.train import TaskResult, TrialResult

    result = TrialResult(pattern="A M", fingerprint="f", suite="s", quality=0.5)
    result.tasks = {"a": TaskResult("a", {"accuracy": 0.5, "loss": 0.5}, steps=7,
                                    tokens_per_s=10.0, lr=1e-3),
                    "b": TaskResult("b", {"accuracy": 0.5, "loss": 1.0}, steps=7)}
    return result


@pytest.mark.parametrize("kind", ["trained", "failed", "duplicate", "duplicate of a failure"])
def test_no_prefix_of_a_record_written_by_a_killed_worker_reads_as_a_new_measurement(kind):
    """The evaluator writes a record one key per storage call, and a worker killed in between
    leaves a prefix of it on a trial that the heartbeat then fails. No strict prefix may count
    as a measurement (it would count toward the budget, hold the architecture's claim, and be
    reused); the whole record counts only if the candidate failed by itself."""
    import optuna
    from optuna.distributions import CategoricalDistribution

    from nas.halving import counts_toward_budget
    from nas.record import is_measured

    failure = "nan_loss at step 3" if kind in ("failed", "duplicate of a failure") else None
    result = TrainedResult(quality=0.5, loss=1.0, device="cpu", failure=failure)
    record = TrialRecord(pattern="A M", fingerprint="f", result=result, wall_seconds=2.0,
                         duplicate_of=7 if kind.startswith("duplicate") else None)
    items = list(record.to_user_attrs().items())
    for length in range(len(items) + 1):
        trial = optuna.trial.create_trial(
            state=optuna.trial.TrialState.FAIL, params={"x": 0},
            distributions={"x": CategoricalDistribution([0])}, user_attrs=dict(items[:length]))
        whole = length == len(items)
        assert is_measured(trial) == (whole and failure is not None), (kind, items[:length])
        assert not counts_toward_budget(trial) or (whole and kind == "failed"), items[:length]
