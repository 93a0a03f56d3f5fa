"""nas.snapshot reads a study from Optuna's tables directly: it must give exactly the trials
Optuna's own storage gives, fall back to Optuna on a schema it does not know, and fail in one
line without creating files."""

from __future__ import annotations

import math
import time

import optuna
import pytest

from nas import snapshot
from nas.snapshot import read_studies, read_study
from nas.storage import StorageError, load_study, open_storage


def _comparable(trial: optuna.trial.FrozenTrial) -> dict:
    """The trial's fields, with NaN made equal to itself."""
    fields = dict(vars(trial))
    fields["intermediate_values"] = {step: "nan" if math.isnan(value) else value
                                      for step, value in trial.intermediate_values.items()}
    return fields


def _optuna_view(url: str, name: str):
    storage = open_storage(url, heartbeat=False)
    try:
        study = load_study(name, storage)
        return study, study.get_trials(deepcopy=False)
    finally:
        storage.engine.dispose()


@pytest.fixture()
def study_url(tmp_path):
    """A study with every trial state, special values, several kinds of parameters and
    attributes, constraints, intermediate values, and a second study beside it."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = open_storage(url, heartbeat=False)
    optuna.create_study(study_name="other", storage=storage).optimize(lambda t: 1.0, n_trials=1)
    study = optuna.create_study(study_name="s", storage=storage,
                                directions=["minimize", "maximize"])
    study.set_user_attr("space", {"pattern": "A M", "widths": [64, 128]})

    def objective(trial: optuna.Trial):
        x = trial.suggest_float("x", -2.0, 2.0)
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        trial.suggest_int("depth", 2, 8, step=2)
        kind = trial.suggest_categorical("kind", ["A", "M", None, 3])
        trial.set_user_attr("pattern", f"{kind} x{x:.2f}")
        trial.set_user_attr("tasks", {"mqar": {"accuracy": 0.5, "curve": [[1, 0.1], [2, 0.4]]}})
        trial.storage.set_trial_system_attr(trial._trial_id, "constraints:params", x - 1.0)
        # Trial.report is single-objective only; the storage takes them for any study.
        for step, value in enumerate((float("nan"), float("inf"), x)):
            trial.storage.set_trial_intermediate_value(trial._trial_id, step, value)
        if trial.number == 2:
            raise optuna.TrialPruned()
        if trial.number == 3:
            return float("nan"), 1.0  # Optuna records this trial as FAIL
        if trial.number == 4:
            return float("inf"), float("-inf")
        return x * x, -abs(x)

    study.optimize(objective, n_trials=6, catch=(ValueError,))
    running = study.ask()  # RUNNING (no values)
    running.set_user_attr("pattern", "still running")
    study.enqueue_trial({"x": 0.5, "lr": 0.01, "depth": 4, "kind": "M"})  # WAITING
    storage.engine.dispose()
    return url


def test_snapshot_equals_optunas_own_reading(study_url):
    study, expected = _optuna_view(study_url, "s")
    snap = read_study("s", study_url)
    assert snap.study_name == "s"
    assert snap.directions == tuple(study.directions)
    assert snap.user_attrs == study.user_attrs
    assert [_comparable(t) for t in snap.trials] == [_comparable(t) for t in expected]
    # ... in the same order too (dict equality ignores it): parameters as they were suggested.
    assert [list(t.params) for t in snap.trials] == [list(t.params) for t in expected]
    states = {t.state.name for t in snap.trials}
    assert states == {"COMPLETE", "PRUNED", "FAIL", "WAITING", "RUNNING"}
    assert snap.trials[4].values == [math.inf, -math.inf]
    assert snap.trials[0].constraints == expected[0].constraints != {}


def test_snapshot_gives_local_times_like_optuna(study_url, monkeypatch):
    """Optuna stores naive UTC and returns naive local times; so must the snapshot."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # UTC+05:30: no hour offset could pass for it
    time.tzset()
    try:
        _, expected = _optuna_view(study_url, "s")
        snap = read_study("s", study_url)
        assert [t.datetime_start for t in snap.trials] == [t.datetime_start for t in expected]
        assert [t.datetime_complete for t in snap.trials] == [
            t.datetime_complete for t in expected]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_get_trials_filters_states_and_copies_on_request(study_url):
    snap = read_study("s", study_url)
    complete = snap.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.number for t in complete] == [0, 1, 4, 5]
    assert complete[0] is snap.trials[0]
    copied = snap.get_trials()
    assert copied[0] is not snap.trials[0] and copied[0] == snap.trials[0]


def test_an_unknown_schema_version_is_read_by_optuna(study_url, monkeypatch):
    def fast_path_used(*args, **kwargs):
        raise AssertionError("the direct reader ran on a schema it does not know")

    monkeypatch.setattr(snapshot, "KNOWN_SCHEMA_VERSION", -1)
    monkeypatch.setattr(snapshot, "_read", fast_path_used)
    _, expected = _optuna_view(study_url, "s")
    assert [_comparable(t) for t in read_study("s", study_url).trials] == [
        _comparable(t) for t in expected]


def test_a_missing_study_names_the_studies_there(study_url):
    with pytest.raises(StorageError, match=r"study 'nope' not found in .*studies there: other, s"):
        read_study("nope", study_url)


def test_a_missing_sqlite_file_is_not_created(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(StorageError, match="study 's' not found: no database file at"):
        read_study("s", f"sqlite:///{path}")
    assert not path.exists()


def test_a_database_without_optuna_tables_is_left_to_optuna(tmp_path):
    """An empty SQLite file: Optuna creates its tables, then finds no study."""
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(StorageError, match="the database has no studies"):
        read_study("s", f"sqlite:///{path}")


def test_read_studies_reads_every_study_oldest_first(study_url):
    snapshots = read_studies(study_url)
    assert [s.study_name for s in snapshots] == ["other", "s"]
    assert [len(s.trials) for s in snapshots] == [1, len(read_study("s", study_url).trials)]
    assert snapshots[1].user_attrs == read_study("s", study_url).user_attrs


def test_read_studies_of_a_missing_file_says_so(tmp_path):
    path = tmp_path / "absent.db"
    with pytest.raises(StorageError, match="no database file at"):
        read_studies(f"sqlite:///{path}")
    assert not path.exists()


def test_optunas_reader_leaves_out_a_trial_with_a_damaged_attribute_too(study_url, monkeypatch):
    storage = open_storage(study_url, heartbeat=False)
    study = load_study("s", storage)
    damaged = study.ask()
    damaged.set_user_attr("duplicate_of", "seven")  # a number in the record's schema
    storage.engine.dispose()
    expected = ((damaged.number, "user attribute 'duplicate_of' is 'seven', expected a number"),)
    assert read_study("s", study_url).damaged == expected  # the direct reader
    monkeypatch.setattr(snapshot, "KNOWN_SCHEMA_VERSION", -1)
    read = read_study("s", study_url)
    assert damaged.number not in [t.number for t in read.trials]
    assert read.damaged == expected
