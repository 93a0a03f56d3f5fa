"""Studies in a SQLite file: definition guard, duplicates, constraints, baselines, failures,
interrupted and dead-worker trials. Training is replaced by an instant evaluation here (the
`run=` hook of the worker); tests/test_cli_search.py runs real training end to end."""

from __future__ import annotations

import re
import time

import optuna
import pytest
from optuna.trial import TrialState

from nas.definition import (Change, DefinitionChanged, DefinitionError, StudyDefinition,
                            toolkit_versions)
from nas.evaluate import find_measured
from nas.objectives import ObjectiveError, Objective, parse_objectives
from nas.report import pareto_front, status, trial_rows
from nas.storage import StorageError, load_study, open_storage
from nas.study import (Opened, count_trials, create_or_check, open_study, requeue_lost,
                       run_worker)
from search_spaces import SearchSpace

SPACE = """
name: tiny
pattern: "{A|M|L} {A|M}"
dims:
  d_model: [16, 32]
  n_heads: 2
  d_state: 4
  window: 8
"""


def definition(space_yaml: str = SPACE, *, suite: str = "quick", n_trials: int = 6,
               objectives: str = "quality,params", baselines=(), steps: int = 3,
               sampler: str = "random") -> StudyDefinition:
    from trials.tasks import load_suite
    from trials.train import Budget

    space = SearchSpace.from_yaml(space_yaml)
    task_suite = load_suite(suite)
    return StudyDefinition(space.to_yaml(), space.fingerprint(), task_suite.to_dict(),
                           task_suite.fingerprint(), Budget(steps=steps).to_dict(), objectives,
                           sampler, n_trials, 0, tuple(baselines), toolkit_versions())


class FakeRun:
    """An instant evaluation: quality from the share of attention layers, and a call log."""

    def __init__(self, fail_first=(), interrupt_once: type[BaseException] | None = None) -> None:
        self.calls: list[str] = []
        self.fail_patterns = set(fail_first)  # first mixers whose stacks fail
        self.interrupt_once = interrupt_once

    def __call__(self, arch, suite, budget, seed=0):
        from trials.train import TaskResult, TrialResult

        if self.interrupt_once is not None:
            error, self.interrupt_once = self.interrupt_once, None
            raise error(1)
        self.calls.append(arch.fingerprint())
        result = TrialResult(pattern=arch.pattern, fingerprint=arch.fingerprint(),
                             suite=suite.name)
        if any(layer.mixer in self.fail_patterns for layer in arch.layers[:1]):
            result.status, result.failure = "failed", "nan_loss at step 2"
            return result
        attention = sum(layer.mixer == "A" for layer in arch.layers) / len(arch.layers)
        result.quality = 0.2 + 0.6 * attention + arch.d_model / 1000
        result.tasks = {entry.name: TaskResult(entry.name, {"accuracy": result.quality,
                                                            "loss": 1 - result.quality})
                        for entry in suite}
        result.measured = {"train_tokens_per_s": 1000.0, "decode_ms_per_token": 1.0}
        return result


@pytest.fixture
def storage(tmp_path):
    return open_storage(f"sqlite:///{tmp_path / 'study.db'}")


def test_objectives_parse_and_refuse():
    objectives = parse_objectives("quality, cache@128k,params,decode_ms@4096")
    assert [o.name for o in objectives] == ["quality", "cache@128000", "params", "decode_ms@4096"]
    assert [o.direction for o in objectives] == ["maximize", "minimize", "minimize", "minimize"]
    assert parse_objectives("flops@2Ki")[0] == Objective("flops", 2048)
    for bad, words in (("quality,acc", "unknown (valid: quality, loss"),
                       ("cache", "give a context length"), ("params@5", "takes no @context"),
                       ("quality,quality", "listed twice"), ("cache@x", "not a whole number"),
                       ("decode_ms@1,decode_ms@2", "one context per study"), ("", "empty")):
        with pytest.raises(ObjectiveError, match=re.escape(words)):
            parse_objectives(bad)


def test_search_records_definition_and_trials(storage):
    spec = definition(n_trials=6)
    study, _ = create_or_check("s", storage, spec)
    run = FakeRun()
    counts = run_worker(study, spec, run=run)
    # six distinct architectures measured; duplicate draws are recorded besides them
    assert counts.distinct == 6 == len(run.calls) and counts.complete == counts.measured >= 6
    stored = StudyDefinition.from_attrs(load_study("s", storage).user_attrs, "s")
    assert stored == spec
    trial = study.trials[0]
    for key in ("pattern", "arch", "fingerprint", "analytic", "quality", "tasks", "measured",
                "device", "wall_seconds"):
        assert key in trial.user_attrs, key
    assert trial.values[1] == trial.user_attrs["analytic"]["params"]
    # The values are what the objectives say, computed from the recorded attributes.
    assert trial.values[0] == pytest.approx(trial.user_attrs["quality"])


def test_duplicates_reuse_recorded_values(storage):
    spec = definition(n_trials=10)
    study, _ = create_or_check("s", storage, spec)
    run = FakeRun()
    run_worker(study, spec, run=run)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    fingerprints = [t.user_attrs["fingerprint"] for t in trials]
    # 12 architectures, 10 distinct ones measured: repeats are drawn with this seed on the way,
    # recorded as duplicates that do not count; each architecture was trained once.
    assert len(run.calls) == len(set(run.calls)) == len(set(fingerprints)) == 10 < len(trials)
    for trial in trials:
        if "duplicate_of" in trial.user_attrs:
            twin = study.trials[trial.user_attrs["duplicate_of"]]
            assert twin.user_attrs["fingerprint"] == trial.user_attrs["fingerprint"]
            assert twin.values == trial.values
    assert all("duplicate_of" not in t.user_attrs for t in pareto_front(study))


def test_infeasible_candidates_are_recorded_but_never_trained(storage):
    space = SPACE + "constraints:\n  max_params: 20K\n"
    spec = definition(space, n_trials=4)
    study, _ = create_or_check("s", storage, spec)
    run = FakeRun()
    counts = run_worker(study, spec, run=run)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert counts.distinct == 4 and pruned, "some d_model=32 draws break the 20K limit"
    for trial in pruned:
        assert trial.user_attrs["violations"]["max_params"] > 0
        assert trial.constraints["max_params"] > 0
        assert trial.user_attrs["fingerprint"] not in run.calls
    for trial in study.get_trials(states=(TrialState.COMPLETE,)):
        assert trial.user_attrs["analytic"]["params"] <= 20_000


def test_candidate_failures_are_results_with_reasons(storage):
    spec = definition(n_trials=8)
    study, _ = create_or_check("s", storage, spec)
    counts = run_worker(study, spec, run=FakeRun(fail_first={"M"}))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert failed and counts.failed == len(failed) and counts.distinct == 8
    assert {t.user_attrs["failure"].split(" (")[0] for t in failed} == {"nan_loss at step 2"}
    assert status(study).failures == {"nan_loss": len(failed)}


def test_changed_definition_is_refused_unless_allowed(storage):
    create_or_check("s", storage, definition())

    def refused(spec, **kwargs) -> tuple[Change, ...]:
        with pytest.raises(DefinitionChanged) as raised:
            create_or_check("s", storage, spec, **kwargs)
        return raised.value.changes

    assert refused(definition(suite="mqar")) == (Change("suite", "quick", "mqar"),)
    assert refused(definition(steps=5)) == (Change("budget", {"steps": 3}, {"steps": 5}),)
    (space,) = refused(definition(SPACE.replace("[16, 32]", "[16, 64]")))
    assert space.field == "space" and space.old != space.new
    with pytest.raises(DefinitionChanged) as raised:
        create_or_check("s", storage, definition(objectives="quality"), allow_changes=True)
    assert raised.value.fixed and raised.value.changes == (
        Change("objectives", "quality,params", "quality"),)
    study, opened = create_or_check("s", storage, definition(steps=5), allow_changes=True)
    assert opened.changes == (Change("budget", {"steps": 3}, {"steps": 5}),)
    assert StudyDefinition.from_attrs(study.user_attrs, "s").budget["steps"] == 5
    # The same experiment with a bigger trial budget is simply continued.
    study, opened = create_or_check("s", storage, definition(steps=5, n_trials=9))
    assert opened == Opened() and study.user_attrs["n_trials"] == 9


def test_the_objectives_are_named_in_optuna(storage):
    """optuna-dashboard and Optuna's plots show these names rather than "Objective 0"."""
    spec = definition(objectives="quality,params,cache@131072")
    create_or_check("s", storage, spec)
    assert load_study("s", storage).metric_names == ["quality", "params", "cache@131072"]
    # A study made before the names were set gets them when a worker opens it.
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        load_study("s", storage).set_metric_names(["a", "b", "c"])
    open_study("s", storage)
    assert load_study("s", storage).metric_names == ["quality", "params", "cache@131072"]


def test_resume_continues_to_the_new_budget(storage):
    spec = definition(n_trials=3)
    study, _ = create_or_check("s", storage, spec)
    run_worker(study, spec, run=FakeRun())
    study, stored = open_study("s", storage)
    counts = run_worker(study, stored.with_trials(5), run=FakeRun())
    assert counts.distinct == 5 and len(study.trials) >= 5


def test_baselines_are_enqueued_and_reach_the_front(storage):
    space = """
pattern: "{A|M|R|L}*{depth: 2..6}"
dims: {d_model: [32, 64], n_heads: 4, window: [64, 128]}
"""
    spec = definition(space, n_trials=5, baselines=("transformer", "griffin", "zamba"))
    study, opened = create_or_check("s", storage, spec)
    assert any(m.startswith("baseline zamba: skipped") for m in opened.messages)
    assert any(m.startswith("baseline transformer: enqueued") for m in opened.messages)
    run_worker(study, spec, run=FakeRun())
    baselines = {t.user_attrs.get("baseline"): t for t in study.trials if
                 t.user_attrs.get("baseline")}
    assert set(baselines) == {"transformer", "griffin"}
    assert baselines["transformer"].user_attrs["pattern"] == "A*6"
    assert baselines["griffin"].user_attrs["pattern"] == "(R*2 L128)*2"
    # An all-attention stack scores best with the fake evaluation: the transformer baseline
    # is on the front, as `hnas pareto` will show it.
    assert baselines["transformer"].number in {t.number for t in pareto_front(study)}
    assert status(study).baselines == {"transformer": baselines["transformer"].number,
                                          "griffin": baselines["griffin"].number}


# Ctrl-C reaches us as KeyboardInterrupt, or as SystemExit(1) when Lightning's `fit` caught it.
@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit])
def test_interrupted_trial_is_queued_again_once(storage, interruption):
    spec = definition(n_trials=3)
    study, _ = create_or_check("s", storage, spec)
    with pytest.raises(KeyboardInterrupt):
        run_worker(study, spec, run=FakeRun(interrupt_once=interruption))
    first = study.trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["interrupted"]
    assert count_trials(study).measured == 0 and count_trials(study).lost == 1
    counts = run_worker(study, spec, run=FakeRun())
    assert counts.distinct == 3
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].params == first.params
    assert retry[0].state == TrialState.COMPLETE
    assert requeue_lost(study) == 0  # once only


def study_with_heartbeats(tmp_path, monkeypatch, grace: int):
    """A 2-trial study on a SQLite file whose storage beats every second and takes a trial
    for dead `grace` seconds after its last beat: (storage, definition, study)."""
    import nas.storage

    monkeypatch.setattr(nas.storage, "HEARTBEAT_INTERVAL", 1)
    monkeypatch.setattr(nas.storage, "GRACE_PERIOD", grace)
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}")
    spec = definition(n_trials=2)
    study, _ = create_or_check("s", storage, spec)
    return storage, spec, study


def test_dead_worker_trial_is_failed_and_retried(tmp_path, monkeypatch):
    storage, spec, study = study_with_heartbeats(tmp_path, monkeypatch, grace=2)
    # A worker that asked for a trial, beat once, and died.
    dead = study.ask()
    storage.record_heartbeat(dead._trial_id)
    time.sleep(3)
    counts = run_worker(study, spec, run=FakeRun())
    assert counts.measured == 2 and counts.running == 0
    dead_frozen = study.trials[dead.number]
    assert dead_frozen.state == TrialState.FAIL and "failure" not in dead_frozen.user_attrs
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert status(study).lost == {"worker died": 1}


def test_trial_rows_sort_and_filter(storage):
    spec = definition(n_trials=5)
    study, _ = create_or_check("s", storage, spec)
    run_worker(study, spec, run=FakeRun())
    rows = trial_rows(study, sort="quality", limit=3)
    assert len(rows) == 3
    assert [r.values["quality"] for r in rows] == sorted((r.values["quality"] for r in rows), reverse=True)
    assert rows[0].values["quality"] == max(t.values[0] for t in study.trials)
    with pytest.raises(ValueError, match="not an objective of this study"):
        trial_rows(study, sort="loss")
    with pytest.raises(ValueError, match="state 'done': unknown"):
        trial_rows(study, state="done")


def test_find_measured_ignores_lost_trials(storage):
    spec = definition(n_trials=1)
    study, _ = create_or_check("s", storage, spec)
    lost = study.ask()
    lost.set_user_attr("fingerprint", "abc")
    study.tell(lost, state=TrialState.FAIL)
    assert find_measured(study, "abc") is None


def test_storage_errors_are_one_line(tmp_path):
    for url, words in (("not a url", "not an SQLAlchemy URL"),
                       ("foo://x", "unknown database kind 'foo'"),
                       (f"sqlite:///{tmp_path}/missing/x.db", "does not exist"),
                       ("postgresql+psycopg://u:secret@127.0.0.1:1/db", "cannot connect")):
        with pytest.raises(StorageError, match=words) as error:
            open_storage(url)
        assert "\n" not in str(error.value) and "secret" not in str(error.value)
    storage = open_storage(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(StorageError, match="study 'nope' not found .* no studies"):
        load_study("nope", storage)
    optuna.create_study(study_name="plain", storage=storage)
    with pytest.raises(DefinitionError, match="not created by hnas"):
        open_study("plain", storage)


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "gp", "random"])
def test_every_sampler_runs_a_constrained_study(storage, sampler):
    space = SPACE + "constraints:\n  max_params: 20K\n"
    spec = definition(space, n_trials=5, sampler=sampler)
    study, _ = create_or_check("s", storage, spec)
    counts = run_worker(study, spec, run=FakeRun())
    assert counts.distinct == 5
    assert type(study.sampler).__name__.lower().startswith(
        {"nsga2": "nsgaii", "tpe": "tpe", "gp": "gp", "random": "random"}[sampler])


def test_grid_visits_every_assignment_once(storage):
    spec = definition(n_trials=SearchSpace.from_yaml(SPACE).size(), sampler="grid")
    study, opened = create_or_check("s", storage, spec)
    assert opened.messages == (f"grid: enqueued {spec.n_trials} assignments",)
    run = FakeRun()
    counts = run_worker(study, spec, run=run)
    assert counts.measured == spec.n_trials == 12
    assert len(set(run.calls)) == len(run.calls) == 12
    assert not any("duplicate_of" in t.user_attrs for t in study.trials)


def test_every_objective_kind_gets_its_value(storage):
    from nas.evaluate import trial_budget

    spec = definition(n_trials=2, objectives="loss,train_tokens_per_s,decode_ms@64,flops@128,"
                                             "active_params,cache@256")
    assert trial_budget(spec).decode_context == 64  # latency is timed where the objective asks
    study, _ = create_or_check("s", storage, spec)
    run_worker(study, spec, run=FakeRun())
    trial = study.trials[0]
    analytic = trial.user_attrs["analytic"]
    assert trial.values == [pytest.approx(trial.user_attrs["loss"]), 1000.0, 1.0,
                            analytic["flops@128"], analytic["active_params"],
                            analytic["cache@256"]]
    assert study.directions[1] == optuna.study.StudyDirection.MAXIMIZE


def outage_error(message: str = "connection refused"):
    """What Optuna's RDB storage raises when the database is down: StorageInternalError, with
    SQLAlchemy's OperationalError as its cause."""
    from sqlalchemy.exc import OperationalError

    try:
        raise OperationalError("UPDATE trials", {}, Exception(message))
    except OperationalError as cause:
        error = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
        error.__cause__ = cause
        return error


def test_a_storage_outage_is_waited_out_not_the_workers_end(storage, monkeypatch, capsys):
    """The database fails under a trial's writes and under its heartbeat: the worker waits
    (saying so once per outage), and the trial carries on; nothing is lost or trained twice."""
    import nas.storage

    monkeypatch.setattr(nas.storage, "MAX_BACKOFF_S", 0.05)
    spec = definition(n_trials=3)
    study, _ = create_or_check("s", storage, spec)
    backend = study._storage._backend
    real = backend.set_trial_user_attr
    failures = iter([True, True, False, False, True] + [False] * 1000)

    def flaky(*args, **kwargs):
        if next(failures):
            raise outage_error()
        return real(*args, **kwargs)

    monkeypatch.setattr(backend, "set_trial_user_attr", flaky)
    fake = FakeRun()
    counts = run_worker(study, spec, run=fake, patience=nas.storage.Patience(wait_s=30))
    assert counts.distinct == 3 and counts.lost == 0
    assert len(fake.calls) == len(set(fake.calls))
    err = capsys.readouterr().err
    assert err.count("the study database is unreachable (connection refused)") == 2, err
    assert err.count("the study database is back after") == 2, err


def test_a_database_that_will_not_work_is_not_waited_for(storage, monkeypatch):
    """A read-only or damaged database is no outage: the worker stops at once and says why."""
    import nas.storage

    spec = definition(n_trials=2)
    study, _ = create_or_check("s", storage, spec)

    def read_only(*args, **kwargs):
        raise outage_error("attempt to write a readonly database")

    monkeypatch.setattr(study._storage._backend, "set_trial_user_attr", read_only)
    started = time.monotonic()
    with pytest.raises(optuna.exceptions.StorageInternalError):
        run_worker(study, spec, run=FakeRun(), patience=nas.storage.Patience(wait_s=60))
    assert time.monotonic() - started < 10
    from nas.storage import describe_storage_error, is_outage

    assert not is_outage(outage_error("attempt to write a readonly database"))
    assert is_outage(outage_error("server closed the connection unexpectedly"))
    assert describe_storage_error(outage_error("attempt to write a readonly database")) == \
        "the study database is read-only (attempt to write a readonly database)"


def test_an_outage_longer_than_the_wait_ends_the_worker_in_one_line(storage, monkeypatch):
    import nas.storage

    monkeypatch.setattr(nas.storage, "MAX_BACKOFF_S", 0.05)
    spec = definition(n_trials=2)
    study, _ = create_or_check("s", storage, spec)

    def down(*args, **kwargs):
        raise outage_error()

    monkeypatch.setattr(study._storage._backend, "set_trial_user_attr", down)
    with pytest.raises(nas.storage.StorageError, match="unreachable for 1 s"):
        run_worker(study, spec, run=FakeRun(), patience=nas.storage.Patience(wait_s=1))


def test_a_trial_failed_under_its_worker_is_dropped_not_a_crash(storage, capsys):
    """Another worker judged this one's trial stale (say, after a network cut) and failed it:
    the worker says so, drops its result and goes on; the budget is still met."""
    spec = definition(n_trials=2)
    study, _ = create_or_check("s", storage, spec)
    fake = FakeRun()

    def failed_meanwhile(arch, suite, budget, seed=0):
        if not fake.calls:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            storage.set_trial_state_values(running[0]._trial_id, TrialState.FAIL)
        return fake(arch, suite, budget, seed)

    counts = run_worker(study, spec, run=failed_meanwhile)
    assert counts.distinct == 2 and counts.lost == 1
    assert "was failed by another worker while this one was cut off" in capsys.readouterr().err


def test_a_trial_failed_between_the_tells_check_and_its_update_is_dropped(storage, capsys,
                                                                         monkeypatch):
    """`tell(skip_if_finished=True)` reads the trial's state, then updates it: another worker
    failing the trial in between makes the update raise UpdateFinishedTrialError (once in a
    full run of test_halving's two workers). The worker drops that result as it does any
    trial failed under it, and goes on."""
    spec = definition(n_trials=2)
    study, _ = create_or_check("s", storage, spec)
    real_tell, raced = study.tell, []

    def tell_after_a_race(trial, *args, **kwargs):
        if not raced:
            raced.append(trial.number)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            raise optuna.exceptions.UpdateFinishedTrialError("finished meanwhile")
        return real_tell(trial, *args, **kwargs)

    monkeypatch.setattr(study, "tell", tell_after_a_race)
    counts = run_worker(study, spec, run=FakeRun())
    assert raced and counts.distinct == 2 and counts.running == counts.waiting == 0
    assert "was failed by another worker while this one was cut off" in capsys.readouterr().err


def test_two_searches_creating_one_study_at_once_share_it(tmp_path):
    """Two `hnas search` started together: one creates the study, the other finds it created
    (DuplicatedStudyError), waits for its definition and joins it: one study, one baseline."""
    import threading

    url = f"sqlite:///{tmp_path / 'race.db'}"
    space = 'pattern: "{A|M}*{depth: 2..6}"\ndims: {d_model: 32, n_heads: 4}\n'
    spec = definition(space, n_trials=2, baselines=("transformer",))
    barrier, results, errors = threading.Barrier(2, timeout=60), [], []

    def create() -> None:
        try:
            storage = open_storage(url)  # both open the fresh file at once: a race of its own
            barrier.wait()
            results.append(create_or_check("s", storage, spec))
        except Exception as error:  # noqa: BLE001 - reported below, never a hung test
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors
    assert len(results) == 2
    study = results[0][0]
    assert len(optuna.get_all_study_summaries(study._storage)) == 1
    assert [t.user_attrs.get("baseline") for t in study.get_trials()] == ["transformer"]


def test_processes_opening_a_fresh_sqlite_file_at_once_all_get_the_storage(tmp_path):
    """Opening a new SQLite file from two threads at the same instant once failed one of them
    with "database is locked" (about 1 try in 10); the loser now waits and opens it."""
    import threading

    errors = []
    for attempt in range(10):
        url = f"sqlite:///{tmp_path / f'fresh{attempt}.db'}"
        barrier = threading.Barrier(2, timeout=60)

        def open_at_once() -> None:
            try:
                barrier.wait()
                open_storage(url)
            except Exception as error:  # noqa: BLE001 - collected and asserted below
                errors.append(error)

        threads = [threading.Thread(target=open_at_once) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert not errors, errors


def test_a_dead_workers_retry_starts_clean(tmp_path, monkeypatch):
    """A worker killed after writing its result but before Optuna's tell: its trial is lost
    (not a measurement without values), and the retry that the heartbeat queues carries its
    parameters and what it was asked to do, not the dead trial's record or budget slot, so that
    a retry lost in turn is not counted either."""
    from nas.claims import TRIAL_SLOT
    from nas.record import TrainedResult, TrialRecord

    storage, _, study = study_with_heartbeats(tmp_path, monkeypatch, grace=1)
    dead = study.ask()
    dead.suggest_categorical("x", [0, 1])
    storage.set_trial_system_attr(dead._trial_id, TRIAL_SLOT, 0)
    written = TrialRecord(pattern="A M", fingerprint="f", baseline="mamba",
                          result=TrainedResult(quality=0.5, loss=1.0))
    for key, value in written.to_user_attrs().items():
        dead.set_user_attr(key, value)
    storage.record_heartbeat(dead._trial_id)
    time.sleep(2)
    optuna.storages.fail_stale_trials(study)

    trials = study.get_trials(deepcopy=False)
    assert trials[dead.number].state == TrialState.FAIL
    assert count_trials(study).lost == 1 and count_trials(study).measured == 0
    retry = trials[-1]
    assert retry.state == TrialState.WAITING and retry.params == trials[dead.number].params
    assert TrialRecord.from_frozen_trial(retry) == TrialRecord(baseline="mamba",
                                                               retry_of=dead.number)
    assert TRIAL_SLOT not in retry.system_attrs
    assert retry.system_attrs["failed_trial"] == dead.number
    assert retry.system_attrs["retry_history"] == [dead.number]
    assert status(study).lost == {"worker died after training": 1}


def test_a_trial_is_queued_again_at_most_max_retry_times(storage):
    from nas.record import TrialRecord
    from nas.storage import RequeueStaleTrial

    spec = definition(n_trials=2)
    study, _ = create_or_check("s", storage, spec)
    requeue = RequeueStaleTrial(max_retry=2)
    lost = study.ask()
    lost.suggest_categorical("x", [0, 1])
    study.tell(lost, state=TrialState.FAIL)
    for expected_history in ([0], [0, 1], None):
        requeue(study, study.get_trials(deepcopy=False)[-1])
        trials = study.get_trials(deepcopy=False)
        if expected_history is None:
            assert len(trials) == 3, "a third retry was queued"
            break
        copy = trials[-1]
        assert copy.system_attrs["retry_history"] == expected_history
        assert copy.system_attrs["failed_trial"] == 0  # the first trial of the chain
        assert TrialRecord.from_frozen_trial(copy).retry_of == expected_history[-1]
        study._storage.set_trial_state_values(copy._trial_id, TrialState.RUNNING)
        study._storage.set_trial_state_values(copy._trial_id, TrialState.FAIL)
