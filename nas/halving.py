"""Successive halving on an Optuna study: rungs as trials, promotions as claims.

Each evaluation of a candidate at one rung is one Optuna trial, so Optuna's states, heartbeats
and retries work unchanged and no finished trial is ever rewritten:

    new candidate       sampled by the study's sampler, trained at rung 0's budget;
                        its `candidate` is its own trial number
    promotion           a WAITING trial with the candidate's parameters fixed, `rung` r+1,
                        `candidate` and `promoted_from` (the trial it continues); whichever
                        worker asks next runs it, continuing the parent's checkpoint to
                        rung r+1's budget (nas.continuation; afresh when there is none)
    every rung trial    records `rung_scores`: the candidate's objective values at each rung
                        so far ({"steps": {"objective": value}}), its own included

A promotion of candidate c from rung r is claimed under `hnas:promote:<r>:<c>` (nas.claims:
one INSERT, or a compare-and-swap over a dead holder), held by the promotion's trial id. The
claim is taken by the worker that creates the WAITING trial and again by the evaluation that
runs it, so:

- two workers that decide at once to promote c: one claim wins; the other's trial, when run,
  finds the claim held by a live trial and is pruned (`promotion_taken`), untrained;
- a worker killed before, during or after creating the trial, or while training it: the trial
  is WAITING (runs later), or RUNNING and failed by the heartbeat check and queued again by
  Optuna's retry callback with its attributes (so the retry takes the claim over), or gone
  (the claim's holder is not live, so c qualifies again and is promoted afresh).

Under the wsd schedule (what `hnas search --fidelity sh` stores) a promoted candidate
continues from the state where its parent's decay began, through Optuna's artifact store
(nas.continuation); under the cosine schedule of older studies it is trained again from scratch.
A checkpoint is spent (`spent_checkpoints`; nas.continuation removes it) once no promotion can
use it: its candidate was measured at the next rung, or will never be promoted there
(nas.rungs.never_promoted), or its upload was never recorded as a trial's checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.claims import Claims, is_live
from nas.record import TrialRecord, is_measured, records_of
from nas.rungs import Rungs, never_promoted, next_promotion
from nas.storage import grace_period

PROMOTE = "hnas:promote:"  # claim key prefix: hnas:promote:<rung>:<candidate>
ARTIFACTS_ATTR = "artifacts:"  # Optuna's trial system attribute per upload (optuna.artifacts)
# A promotion decided on a read of the study is queued (its claim written) within moments; a
# checkpoint that results newer than this would rule out is kept until they are this old, so
# that a worker that planned before those results cannot find it gone.
PRUNE_SETTLE_SECONDS = 60.0
MIN_FRONT_CANDIDATES = 3  # a rung with fewer measured candidates is not shown by default


def promotion_key(rung: int, candidate: int) -> str:
    return f"{PROMOTE}{rung}:{candidate}"


# Each function of a trial takes its `TrialRecord` too when the caller parsed it already (a
# command parses each trial once: nas.record.records_of); without it, it parses the trial.


def rung_of(trial: FrozenTrial, record: TrialRecord | None = None) -> int:
    """The rung a trial trained at (0 for a plain study's trials and for new candidates)."""
    return (record or TrialRecord.from_frozen_trial(trial)).rung or 0


def candidate_of(trial: FrozenTrial, record: TrialRecord | None = None) -> int | None:
    """The candidate a trial measured (None: a plain study's trial or a duplicate draw)."""
    record = record or TrialRecord.from_frozen_trial(trial)
    return None if record.duplicate_of is not None else record.candidate


def is_duplicate(trial: FrozenTrial, record: TrialRecord | None = None) -> bool:
    return (record or TrialRecord.from_frozen_trial(trial)).duplicate_of is not None


def counts_toward_budget(trial: FrozenTrial, record: TrialRecord | None = None) -> bool:
    """A new architecture measured: `--n-trials` counts these (not duplicate draws, which reuse
    a twin's result, and not promotions, which re-measure a candidate at a higher rung)."""
    record = record or TrialRecord.from_frozen_trial(trial)
    return is_measured(trial, record) and record.duplicate_of is None and not record.rung


def minimised(values: Sequence[float] | None,
              directions: Sequence[optuna.study.StudyDirection]) -> tuple[float, ...] | None:
    if values is None:
        return None
    return tuple(-v if d == optuna.study.StudyDirection.MAXIMIZE else v
                 for v, d in zip(values, directions))


def rung_results(trials: Sequence[FrozenTrial], rungs: Rungs,
                 directions: Sequence[optuna.study.StudyDirection],
                 records: Mapping[int, TrialRecord] | None = None
                 ) -> list[dict[int, tuple[float, ...] | None]]:
    """For each rung, candidate -> its minimised objective values there (None: it failed)."""
    records = records_of(trials, records)
    results: list[dict[int, tuple[float, ...] | None]] = [{} for _ in rungs.steps]
    for trial in trials:
        record = records[trial.number]
        rung = rung_of(trial, record)
        candidate = candidate_of(trial, record)
        if not is_measured(trial, record) or rung >= len(results) or candidate is None:
            continue
        values = trial.values if trial.state == TrialState.COMPLETE else None
        if values is not None and not all(math.isfinite(v) for v in values):
            values = None
        results[rung][candidate] = minimised(values, directions)
    return results


def promoted(claims: Claims, trials: Sequence[FrozenTrial], rungs: Rungs,
             now: datetime.datetime | None = None, hold: float = 0.0) -> list[set[int]]:
    """For each rung, the candidates whose promotion from it is claimed by a live trial (a
    holder newer than `trials` counts as live), or queued: a lost promotion that Optuna's retry
    callback or `requeue_lost` queued again will take its claim over when it runs.

    A promotion lost less than `hold` seconds before `now` counts too: Optuna's
    `fail_stale_trials` fails a dead worker's trial first and queues its retry only afterwards,
    and a worker that planned in between would otherwise promote the candidate afresh and leave
    the retry to find the claim taken. Past `hold` with no retry queued (Optuna's retries used
    up, or the failing worker died as well), the candidate is promoted afresh."""
    now = now or datetime.datetime.now()
    by_id = {trial._trial_id: trial for trial in trials}
    sets: list[set[int]] = [set() for _ in rungs.steps]
    for trial in trials:
        rung = rung_of(trial)
        candidate = TrialRecord.from_frozen_trial(trial).candidate
        if 0 < rung < len(sets) and candidate is not None and (
                is_live(trial) or lost_within(trial, now, hold)):
            sets[rung - 1].add(candidate)
    for key, holder in claims.values(PROMOTE).items():
        rung_text, _, candidate_text = key.removeprefix(PROMOTE).partition(":")
        if not (rung_text.isdigit() and candidate_text.isdigit()):
            continue
        if holder not in by_id or is_live(by_id[holder]):
            if int(rung_text) < len(sets):
                sets[int(rung_text)].add(int(candidate_text))
    return sets


def lost_within(trial: FrozenTrial, now: datetime.datetime, seconds: float) -> bool:
    """A trial lost (failed without a result of its own) less than `seconds` before `now`."""
    return (trial.state == TrialState.FAIL and not is_measured(trial)
            and trial.datetime_complete is not None
            and (now - trial.datetime_complete).total_seconds() < seconds)


def plan_promotion(study: optuna.Study, rungs: Rungs, trials: Sequence[FrozenTrial],
                   now: datetime.datetime | None = None) -> tuple[int, FrozenTrial] | None:
    """(rung, the candidate's trial at that rung) to promote next, or None. A promotion lost
    within the storage's heartbeat grace period still counts as made (`promoted`)."""
    results = rung_results(trials, rungs, study.directions)
    hold = grace_period(study._storage) or 0.0
    decision = next_promotion(rungs, results, promoted(Claims(study), trials, rungs, now, hold))
    if decision is None:
        return None
    rung, candidate = decision
    for trial in trials:
        if (rung_of(trial) == rung and candidate_of(trial) == candidate
                and trial.state == TrialState.COMPLETE):
            return rung, trial
    return None


def enqueue_promotion(study: optuna.Study, rung: int, parent: FrozenTrial) -> int | None:
    """Queue the promotion of `parent` (measured at `rung`) as a WAITING trial that holds its
    claim; None when another live trial holds the claim already (the trial stays queued and is
    pruned untrained when it runs)."""
    candidate = TrialRecord.from_frozen_trial(parent).candidate
    record = TrialRecord(rung=rung + 1, candidate=candidate, promoted_from=parent.number)
    template = optuna.trial.create_trial(
        state=TrialState.WAITING, system_attrs={"fixed_params": dict(parent.params)},
        user_attrs=record.to_user_attrs())
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    if Claims(study).take(promotion_key(rung, candidate), trial_id) is not None:
        return None
    return trial_id


def with_shared_warmup(budget: Any, rungs: Rungs) -> Any:
    """A wsd budget whose warm-up is the same at every rung (`warmup` of the first rung's steps
    unless `warmup_steps` is set), so that the runs to successive rungs agree on every step
    before each one's decay and a promotion can continue its parent (nas.continuation)."""
    if budget.schedule != "wsd" or budget.warmup_steps is not None:
        return budget
    return dataclasses.replace(budget, warmup_steps=max(1, round(budget.warmup * rungs.steps[0])))


def rung_scores(parent: FrozenTrial | None, steps: int, objectives: Sequence[Any],
                values: Sequence[float] | None) -> dict[str, dict[str, float | None]]:
    """The candidate's scores at every rung up to this one: the parent's and this trial's."""
    scores = dict(TrialRecord.from_frozen_trial(parent).rung_scores or {}) if parent else {}
    scores[str(steps)] = {objective.name: (None if values is None else value)
                          for objective, value in zip(objectives, values or [None] * len(
                              objectives))}
    return scores


# -- checkpoints no promotion can use -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spent:
    """A stored checkpoint that no promotion can use any more: its artifact, the number of the
    trial that uploaded it, and why."""

    artifact: str
    trial: int
    reason: str


def stored_artifacts(trial: FrozenTrial) -> list[str]:
    """The ids of the artifacts uploaded for a trial (Optuna records each on the trial before
    it writes the file)."""
    return [key.removeprefix(ARTIFACTS_ATTR) for key in trial.system_attrs
            if key.startswith(ARTIFACTS_ATTR)]


def spent_checkpoints(study: optuna.Study, rungs: Rungs, trials: Sequence[FrozenTrial],
                      capacity: int, records: Mapping[int, TrialRecord] | None = None,
                      now: datetime.datetime | None = None,
                      settle: float | None = None) -> list[Spent]:
    """The checkpoints of finished trials that no promotion can use (removed or not):

        continued      its candidate was measured at the next rung (a retry is never needed)
        not promoted   its rung's promotions rule the candidate out (nas.rungs.never_promoted;
                       `capacity`: the study's budget of new architectures), judged on results
                       at least `settle` seconds old (default PRUNE_SETTLE_SECONDS); a
                       promotion claimed, queued, running, or lost within the heartbeat grace
                       period keeps it
        unrecorded     an upload its trial did not record as its checkpoint (the trial was
                       lost, or its upload was repeated)
    """
    records = records_of(trials, records)
    now = now or datetime.datetime.now()
    settle = PRUNE_SETTLE_SECONDS if settle is None else settle
    hold = grace_period(study._storage) or 0.0
    taken = promoted(Claims(study), trials, rungs, now, hold)
    settled = [t for t in trials if t.datetime_complete is None
               or (now - t.datetime_complete).total_seconds() >= settle]
    out = never_promoted(rungs, rung_results(settled, rungs, study.directions, records), taken,
                         capacity)
    measured = rung_results(trials, rungs, study.directions, records)
    spent = []
    for trial in trials:
        if trial.state in (TrialState.RUNNING, TrialState.WAITING):
            continue  # uploading, or about to
        record = records[trial.number]
        rung = rung_of(trial, record)
        for artifact in stored_artifacts(trial):
            if artifact != record.checkpoint:
                reason = "not recorded as its trial's checkpoint"
            elif rung + 1 < len(measured) and record.candidate in measured[rung + 1]:
                reason = f"continued to rung {rung + 1}"
            elif rung < len(out) and record.candidate in out[rung]:
                reason = f"not promoted from rung {rung}"
            else:
                continue
            spent.append(Spent(artifact, trial.number, reason))
    return spent


# -- reading ------------------------------------------------------------------------------------


def rung_counts(trials: Sequence[FrozenTrial], rungs: Rungs,
                records: Mapping[int, TrialRecord] | None = None) -> list[int]:
    """Candidates measured (complete) at each rung."""
    records = records_of(trials, records)
    counts = [0] * len(rungs.steps)
    for trial in trials:
        record = records[trial.number]
        rung = rung_of(trial, record)
        if (trial.state == TrialState.COMPLETE and not is_duplicate(trial, record)
                and rung < len(counts)):
            counts[rung] += 1
    return counts


def default_rung(trials: Sequence[FrozenTrial], rungs: Rungs,
                 records: Mapping[int, TrialRecord] | None = None) -> int:
    """The highest rung that holds at least MIN_FRONT_CANDIDATES complete candidates (rung 0
    when none does): the front and the reports compare candidates there."""
    counts = rung_counts(trials, rungs, records)
    for rung in range(len(counts) - 1, -1, -1):
        if counts[rung] >= MIN_FRONT_CANDIDATES:
            return rung
    return 0
