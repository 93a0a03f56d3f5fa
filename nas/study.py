"""Creating, checking and running studies; any number of workers on one database.

A worker runs one trial at a time with Optuna's ask-and-tell interface and its own heartbeat
thread (Optuna's, inside `optimize`, stops for good at its first database error, and `optimize`
itself crashes when the database fails while it records a result). Between trials it fails
stale trials of dead workers (`optuna.storages.fail_stale_trials`, which re-queues them through
the storage's retry callback, `nas.storage.RequeueStaleTrial`) and counts the distinct architectures the study has measured
(complete, or failed for the candidate's own reason; a duplicate draw, which reuses its twin's
result, and a promotion to a higher rung do not count), so `n_trials` is the study's budget of
architectures, shared by every worker on every machine:

    a candidate qualifies for promotion      -> queue it and run it (successive halving only)
    distinct >= n_trials                     -> done (with rungs: once none is running)
    distinct + running >= n_trials           -> wait: a running trial may still die and come back
    otherwise                                -> run one more trial

That check is a fast path; the guarantees come from claims in the storage (`nas.claims`): a
trial trains only holding one of the N budget slots, and only one trial at a time trains a
canonical architecture (the others wait for its result and reuse it). Each worker claims its
own index, and its sampler is seeded with the study's seed plus that index.

Storage outages are waited out (`nas.storage.Patience`): every database call of the worker,
its trial and its heartbeat is retried with backoff for up to `--outage-wait` seconds. After an
outage a worker waits two heartbeat intervals before judging other trials stale, because every
heartbeat stopped during the outage and the live ones need a moment to resume.

Trials that died with their worker (heartbeat) or were interrupted (Ctrl-C) do not count, even
with a result written before Optuna's tell; they are queued again, once each, with the same
parameters and none of the dead trial's record (`TrialRecord.retried`).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import optuna
from optuna.trial import TrialState

from nas.claims import Claims
from nas.continuation import prune_checkpoints
from nas.definition import (MARKER, Change, DefinitionChanged, DefinitionError,
                            StudyDefinition, baselines_attrs)
from nas.evaluate import CandidateFailed, Evaluator
from nas.halving import (PRUNE_SETTLE_SECONDS, counts_toward_budget, enqueue_promotion,
                         plan_promotion)
from nas.record import TrialRecord, is_measured, records_of
from nas.samplers import make_sampler
from nas.storage import (Patience, first_line, grace_period, is_outage, load_study,
                         study_names)
from search_spaces import load_arch
from search_spaces.errors import UserError
from search_spaces.space.match import params_for

POLL_SECONDS = 2.0
MAX_PRUNED_IN_A_ROW = 500  # infeasible draws in a row before a worker gives up on the space
# Duplicate draws in a row after which a worker takes the space as exhausted (every architecture
# the sampler still proposes has been measured) and stops.
MAX_DUPLICATES_IN_A_ROW = 200
SETTLE_SECONDS = 30.0  # a lost trial this old was surely not re-queued by Optuna's callback
SEED_MODULUS = 2**32  # NumPy's seed range


class SearchError(UserError):
    """A search that cannot go on (for example a space whose candidates are all infeasible)."""


@dataclass
class Counts:
    distinct: int = 0  # new architectures measured: what `n_trials` counts (nas.halving)
    measured: int = 0
    complete: int = 0
    failed: int = 0  # the candidate failed (NaN loss, oom, ...)
    pruned: int = 0  # infeasible or invalid, never trained
    running: int = 0
    waiting: int = 0
    lost: int = 0  # died with a worker or interrupted; run again


def count_trials(study: Any, trials: list[optuna.trial.FrozenTrial] | None = None,
                 records: Mapping[int, TrialRecord] | None = None) -> Counts:
    """Trials by state of an `optuna.Study` or a `StudySnapshot` (`trials`: already read from
    the study, to save reading them again; `records`: theirs, parsed already)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    records = records_of(trials, records)
    counts = Counts()
    for trial in trials:
        record = records[trial.number]
        if trial.state == TrialState.COMPLETE:
            counts.complete += 1
        elif trial.state == TrialState.FAIL:
            if is_measured(trial, record):
                counts.failed += 1
            else:
                counts.lost += 1
        elif trial.state == TrialState.PRUNED:
            counts.pruned += 1
        elif trial.state == TrialState.RUNNING:
            counts.running += 1
        elif trial.state == TrialState.WAITING:
            counts.waiting += 1
        if counts_toward_budget(trial, record):
            counts.distinct += 1
    counts.measured = counts.complete + counts.failed
    return counts


# -- creating and opening -------------------------------------------------------------------------


@dataclass(frozen=True)
class Opened:
    """What `create_or_check` did besides opening the study: the changes it accepted (with
    `allow_changes`) and what it enqueued (baselines added or skipped, the grid)."""

    changes: tuple[Change, ...] = ()
    messages: tuple[str, ...] = ()


def create_or_check(name: str, storage, definition: StudyDefinition, *,
                    allow_changes: bool = False) -> tuple[optuna.Study, Opened]:
    """Create the study, or open the existing one after checking it is the same experiment.

    An existing study with another space, suite, budget or objectives is refused
    (`DefinitionChanged`, which says how) unless `allow_changes`; its objectives can never
    change (Optuna fixes the directions).
    """
    sampler = make_sampler(definition.sampler, definition.seed, definition.n_trials)
    if name in study_names(storage):
        study = load_study(name, storage, sampler=None)
        stored = StudyDefinition.from_attrs(study.user_attrs, name)
        changes = definition.changes_from(stored)
        refusal = DefinitionChanged(name, changes) if changes else None
        if refusal is not None and (not allow_changes or refusal.fixed):
            raise refusal
        for key, value in (definition.to_attrs() if changes else
                           definition.resumable_attrs()).items():
            # The trial budget and the sampler may change freely: neither changes what a
            # trial measures.
            study.set_user_attr(key, value)
        known = {TrialRecord.from_frozen_trial(t).baseline
                 for t in study.get_trials(deepcopy=False)}
        new = tuple(b for b in definition.baselines if b not in known)
        messages = []
        if new:  # baselines named now and not yet in the study are added
            messages = enqueue_baselines(study, definition, new)
            for key, value in baselines_attrs(set(stored.baselines) | set(new)).items():
                study.set_user_attr(key, value)
        set_metric_names(study, definition)
        return load_study(name, storage, sampler=sampler), Opened(changes, tuple(messages))
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                                    directions=definition.directions)
    except optuna.exceptions.DuplicatedStudyError:
        # Another `hnas search` created it a moment ago: once its definition is complete,
        # this one joins it (or is refused) like any existing study.
        wait_for_definition(name, storage)
        return create_or_check(name, storage, definition, allow_changes=allow_changes)
    attrs = definition.to_attrs()
    marker = attrs.pop(MARKER)
    for key, value in attrs.items():
        study.set_user_attr(key, value)
    set_metric_names(study, definition)
    messages = []
    if definition.sampler == "grid":
        space = definition.space()
        assignments = list(space.enumerate())
        for params in assignments:
            study.enqueue_trial(params, skip_if_exists=True)
        messages.append(f"grid: enqueued {len(assignments)} assignments")
    messages.extend(enqueue_baselines(study, definition))
    study.set_user_attr(MARKER, marker)  # last: a study with it is complete, baselines and all
    return study, Opened(messages=tuple(messages))


def set_metric_names(study: optuna.Study, definition: StudyDefinition) -> None:
    """Name the objectives in Optuna itself, so that optuna-dashboard and Optuna's plots say
    quality and cache@131072 rather than "Objective 0" and "Objective 1". Idempotent:
    studies made before this are named when next opened."""
    names = [objective.name for objective in definition.objective_list]
    if study.metric_names != names:
        with warnings.catch_warnings():  # experimental in Optuna 3-5, stable in behaviour
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)


def wait_for_definition(name: str, storage, seconds: float = 60.0) -> None:
    """Wait until the study another process is creating has its format marker (set last)."""
    deadline = time.monotonic() + seconds
    while MARKER not in load_study(name, storage).user_attrs:
        if time.monotonic() >= deadline:
            raise DefinitionError(f"study {name!r} exists but has no hnas definition after "
                                  f"{seconds:g} s; was it created by another tool?")
        time.sleep(POLL_SECONDS / 4)


def open_study(name: str, storage, *, seed_offset: int | None = None,
               definition: StudyDefinition | None = None) -> tuple[optuna.Study,
                                                                     StudyDefinition]:
    """An existing study with its definition and a sampler seeded for this worker: the study's
    seed plus `seed_offset`, or by default plus an index no other worker of the study has had
    (claimed in the storage), so that workers never need a flag to draw different candidates.
    `definition`: use this one rather than the stored one (a resume with a new budget)."""
    study = load_study(name, storage)
    definition = definition or read_definition(study)
    definition.check(name)
    set_metric_names(study, definition)  # a study made before they were named
    if seed_offset is None:
        seed_offset = Claims(study).worker_index({"host": socket.gethostname(),
                                                  "pid": os.getpid(),
                                                  "started": datetime.datetime.now().isoformat()})
    seed = None if definition.seed is None else (definition.seed + seed_offset) % SEED_MODULUS
    sampler = make_sampler(definition.sampler, seed, definition.n_trials)
    return load_study(name, storage, sampler=sampler), definition


def read_definition(study: optuna.Study) -> StudyDefinition:
    """The stored definition of an open study; DefinitionError naming a damaged attribute."""
    try:
        attrs = study.user_attrs
    except ValueError as error:  # Optuna could not decode an attribute's JSON
        raise DefinitionError(f"study {study.study_name!r}: an attribute is damaged "
                              f"({first_line(error)})") from None
    return StudyDefinition.from_attrs(attrs, study.study_name)


def enqueue_baselines(study: optuna.Study, definition: StudyDefinition,
                      names: tuple[str, ...] | None = None) -> list[str]:
    """Enqueue every named preset that the space can produce; say which were skipped."""
    space = definition.space()
    messages = []
    for name in definition.baselines if names is None else names:
        match = params_for(space, load_arch(name))
        if match is None:
            messages.append(f"baseline {name}: skipped, the space cannot produce its layers "
                            f"({load_arch(name).pattern})")
            continue
        study.enqueue_trial(match.params, user_attrs=TrialRecord(baseline=name).to_user_attrs(),
                            skip_if_exists=True)
        note = ""
        if match.adjusted:
            note = " with " + ", ".join(f"{key} {want} -> {used}" for key, (want, used)
                                        in sorted(match.adjusted.items()))
        messages.append(f"baseline {name}: enqueued{note}")
    return messages


def requeue_lost(study: optuna.Study, settle: float = SETTLE_SECONDS) -> int:
    """Queue again, once, every trial lost without a result of its own: stopped by Ctrl-C, or
    failed by a storage error. Trials of dead workers are left to Optuna's heartbeat callback,
    which re-queues them itself: a lost trial is only taken here once it has been failed for
    `settle` seconds, long after that callback would have run (a worker that has just seen its
    own trial fail on a storage error passes 0)."""
    trials = study.get_trials(deepcopy=False)
    records = {t.number: TrialRecord.from_frozen_trial(t) for t in trials}
    retried = {record.retry_of for record in records.values()} | \
        {t.system_attrs.get("failed_trial") for t in trials}
    now = datetime.datetime.now()
    count = 0
    for trial in trials:
        if trial.state != TrialState.FAIL or is_measured(trial) or trial.number in retried:
            continue
        settled = trial.datetime_complete is not None and \
            (now - trial.datetime_complete).total_seconds() >= settle
        if records[trial.number].interrupted or settled:
            again = records[trial.number].retried(trial.number)
            study.enqueue_trial(trial.params, user_attrs=again.to_user_attrs())
            count += 1
    return count


# -- running ---------------------------------------------------------------------------------------


def heartbeat_old_running(study: optuna.Study, touched: set[int]) -> None:
    """Record one heartbeat for each RUNNING trial older than the grace period, once per worker.

    Optuna fails a stale trial only once it has a heartbeat, and a trial's first heartbeat comes
    after `study.ask()` has created it RUNNING and the sampler has drawn from it. A worker killed
    in between leaves a RUNNING trial that nothing would ever fail, and the other workers would
    wait for it forever (measured + running >= n_trials). Given a heartbeat, it goes stale one
    grace period later and is failed and re-queued like any other. A live trial has heartbeats
    of its own, so one more changes nothing; a dead one is delayed by at most one grace period
    per worker that sees it.
    """
    storage = study._storage  # as optuna.storages.fail_stale_trials reaches it
    grace = grace_period(storage)
    if grace is None:
        return
    now = datetime.datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if (trial.number not in touched and trial.datetime_start is not None
                and (now - trial.datetime_start).total_seconds() > grace):
            storage.record_heartbeat(trial._trial_id)
            touched.add(trial.number)


class Heartbeat:
    """A running trial's heartbeat, recorded every interval by a thread of our own until the
    trial ends. A failed record (the database is down) is noted with the worker's `Patience`
    and tried again next interval, so the heartbeat outlives any outage."""

    def __init__(self, study: optuna.Study, trial_id: int, patience: Patience) -> None:
        self.storage = study._storage
        self.trial_id = trial_id
        self.patience = patience
        self.interval = self.storage.get_heartbeat_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "Heartbeat":
        if self.interval is not None:
            self.patience(self.storage.record_heartbeat, self.trial_id)
            self._thread = threading.Thread(target=self._beat, daemon=True,
                                            name=f"hnas-heartbeat-{self.trial_id}")
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception as error:  # noqa: BLE001 - a heartbeat thread must not die
                if is_outage(error):
                    self.patience.down(error)
                else:
                    self.patience.log(f"heartbeat of trial id {self.trial_id} not recorded: "
                                      f"{first_line(error)}")
                continue
            self.patience.back()


class Worker:
    """One worker's loop over a study; see the module's docstring."""

    def __init__(self, study: optuna.Study, definition: StudyDefinition, *,
                 run: Callable[..., Any] | None, patience: Patience,
                 artifacts: Any = None) -> None:
        self.study = study
        self.definition = definition
        self.patience = patience
        self.evaluator = Evaluator(definition, run=run, patience=patience, idle=self.fail_stale,
                                   poll_seconds=POLL_SECONDS, artifacts=artifacts)
        interval = study._storage.get_heartbeat_interval() or 0
        self.stale_hold = 2 * interval + 1  # seconds after an outage before judging others
        self.touched: set[int] = set()
        self.target = definition.capped_trials()
        self.pruned_at: tuple[int, float] | None = None  # (finished trials, monotonic time)
        self.prune_failed = False

    def fail_stale(self) -> None:
        """Fail (and re-queue) the trials of dead workers, unless an outage just ended: then
        every heartbeat is old, live ones included, until their threads have beaten again."""
        ended = self.patience.outage_ended
        if ended is not None and time.monotonic() - ended < self.stale_hold:
            return
        self.patience(optuna.storages.fail_stale_trials, self.study)

    def counts(self) -> Counts:
        self.fail_stale()
        counts = self.patience(count_trials, self.study)
        if counts.running:  # all another worker's, alive or not; one read fewer when alone
            self.patience(heartbeat_old_running, self.study, self.touched)
        return counts

    def promote(self, rungs) -> bool:
        """Queue the promotion of a candidate that qualifies for its next rung (successive
        halving, nas.halving); False when none does (sample a new candidate). Then remove the
        checkpoints no promotion can use any more."""
        trials = self.patience(self.study.get_trials, deepcopy=False)
        plan = self.patience(plan_promotion, self.study, rungs, trials)
        if plan is not None:
            self.patience(enqueue_promotion, self.study, *plan)
        self.prune(rungs, trials)
        return plan is not None

    def prune(self, rungs, trials: list[optuna.trial.FrozenTrial]) -> None:
        """Remove spent checkpoints (nas.continuation) when a trial finished since the last
        pass, or a while after it: a candidate ruled out by recent results is kept until they
        settle (nas.halving.PRUNE_SETTLE_SECONDS)."""
        artifacts = self.evaluator.artifacts
        if artifacts is None or not self.evaluator.continues:
            return
        finished = sum(1 for trial in trials if trial.state.is_finished())
        now = time.monotonic()
        if self.pruned_at is not None and finished == self.pruned_at[0] \
                and now - self.pruned_at[1] < PRUNE_SETTLE_SECONDS / 2:
            return
        pruned = self.patience(prune_checkpoints, self.study, rungs, artifacts, self.target,
                               trials)
        self.pruned_at = (finished, now)
        if pruned.failed and not self.prune_failed:  # said once: the next passes try again
            item, reason = pruned.failed[0]
            self.patience.log(f"checkpoint {item.artifact} of trial {item.trial} could not be "
                              f"removed ({reason}); kept, and tried again after each trial")
            self.prune_failed = True

    def running_new(self) -> int:
        """Running trials that measure a new architecture (not promotions)."""
        return sum(1 for trial in self.patience(self.study.get_trials, deepcopy=False,
                                                states=(TrialState.RUNNING,))
                   if not TrialRecord.from_frozen_trial(trial).rung)

    def run_one(self) -> optuna.trial.FrozenTrial | None:
        """Ask for a trial, evaluate it under a heartbeat, tell its result; the told trial, or
        None when another worker failed it meanwhile (this worker was cut off too long)."""
        trial = self.patience(self.study.ask)
        with Heartbeat(self.study, trial._trial_id, self.patience):
            values, state, error = None, TrialState.COMPLETE, None
            try:
                values = self.evaluator(trial)
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except CandidateFailed:
                state = TrialState.FAIL
            except optuna.exceptions.UpdateFinishedTrialError:
                return self._lost(trial)
            except BaseException as raised:  # Ctrl-C, a bug: the trial fails, the error goes on
                state, error = TrialState.FAIL, raised
            try:
                told = self.patience(self.study.tell, trial, values if state == TrialState.COMPLETE
                                     else None, state=state, skip_if_finished=True)
            except optuna.exceptions.UpdateFinishedTrialError:
                # skip_if_finished reads the trial's state before the update: another worker
                # can fail it in between, and then the update itself refuses
                told = None
        if error is not None:
            raise error
        if told is None or told.state != state:
            return self._lost(trial)
        return told

    def _lost(self, trial: optuna.Trial) -> None:
        self.patience.log(f"trial {trial.number} was failed by another worker while this one was "
                          "cut off from the database; it is queued again, this result is dropped")
        return None


def run_worker(study: optuna.Study, definition: StudyDefinition, *,
               timeout: float | None = None,
               on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
               run: Callable[..., Any] | None = None,
               patience: Patience | None = None, artifacts: Any = None) -> Counts:
    """Run trials until the study has `definition.n_trials` measured ones (or `timeout`).
    `artifacts`: the Optuna artifact store of successive halving's checkpoints
    (nas.continuation.artifact_store); None: promotions retrain."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    worker = Worker(study, definition, run=run, patience=patience or Patience(),
                    artifacts=artifacts)
    deadline = None if timeout is None else time.monotonic() + timeout
    pruned_in_a_row = 0
    worker.patience(requeue_lost, study)
    rungs = definition.rungs
    target = worker.target
    duplicates_in_a_row = 0
    while True:
        counts = worker.counts()
        if deadline is not None and time.monotonic() >= deadline:
            return counts
        # Successive halving: a promotion just queued, or any queued promotion or retry, is run
        # by the ask below whatever the budget of new candidates.
        queued = rungs is not None and (worker.promote(rungs) or counts.waiting)
        if not queued and counts.distinct >= target:
            if rungs is None or not counts.running:
                return counts
            time.sleep(POLL_SECONDS)  # a running rung may yet qualify a candidate for promotion
            continue
        if not queued and counts.distinct + (
                counts.running if rungs is None else worker.running_new()) >= target:
            time.sleep(POLL_SECONDS)  # a running trial elsewhere may die and be queued again
            continue
        finished = worker.run_one()
        if finished is None:
            continue
        record = TrialRecord.from_frozen_trial(finished)
        pruned = (finished.state == TrialState.PRUNED
                  and not (record.surplus or record.promotion_taken))
        pruned_in_a_row = pruned_in_a_row + 1 if pruned else 0
        duplicates_in_a_row = duplicates_in_a_row + 1 if record.duplicate_of is not None else 0
        if on_trial is not None:  # progress reports read the study too
            worker.patience(on_trial, study, finished)
        if duplicates_in_a_row >= MAX_DUPLICATES_IN_A_ROW:
            worker.patience.log(f"{duplicates_in_a_row} draws in a row were architectures "
                                "measured already: the sampler has exhausted the space; stopping")
            return worker.counts()
        if pruned_in_a_row >= MAX_PRUNED_IN_A_ROW:
            raise SearchError(f"{pruned_in_a_row} candidates in a row broke the space's "
                              "constraints; loosen them or narrow the space")
