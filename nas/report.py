"""What a study has found, as typed records for the CLI's tables, JSON and CSV.

Everything is read from Optuna's records: trial states, values and each trial's
`nas.record.TrialRecord`. Each function takes an `optuna.Study` or a
`nas.snapshot.StudySnapshot` (the same trials, read at once; what the CLI passes). Nothing here
writes to the study. `to_dict()` gives each record's JSON (what `--json` prints).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any, Mapping

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.definition import StudyDefinition
from nas.continuation import removed_checkpoints
from nas.halving import default_rung, rung_counts, rung_of, stored_artifacts
from nas.objectives import MAXIMIZE, Objective
from nas.record import INTERRUPTED, RUNG, TrialRecord, is_measured, records_of
from nas.snapshot import ReadableStudy, study_system_attrs
from nas.study import count_trials
from search_spaces.errors import UserError

STATES = ("complete", "fail", "pruned", "running", "waiting")
DIED_AFTER_TRAINING = "worker died after training"


class ReportError(UserError):
    """A state, objective or rung to select or sort by that the study does not have."""


def objectives_of(study: ReadableStudy) -> tuple[Objective, ...]:
    return StudyDefinition.from_attrs(study.user_attrs, study.study_name).objective_list


def failure_kind(reason: str) -> str:
    """`nan_loss at step 17` -> `nan_loss`; `RuntimeError: shape ...` -> `RuntimeError`."""
    reason = re.sub(r" \(duplicate of trial \d+\)$", "", reason)
    return re.split(r" at step |: ", reason, maxsplit=1)[0]


def shown_rung(study: ReadableStudy, trials: list[FrozenTrial], rung: int | None = None,
               records: Mapping[int, TrialRecord] | None = None) -> int | None:
    """The rung at which a study with rungs is compared (`rung`, checked, or by default the
    highest one with enough candidates: nas.halving.default_rung); None for a plain study.
    `records`: the trials' records, if parsed already (nas.record.records_of)."""
    rungs = StudyDefinition.from_attrs(study.user_attrs, study.study_name).rungs
    if rungs is None:
        if rung is not None:
            raise ReportError(f"--rung {rung}: study {study.study_name!r} has no rungs "
                              "(every candidate trained the full budget)")
        return None
    if rung is None:
        return default_rung(trials, rungs, records)
    if not 0 <= rung <= rungs.top:
        raise ReportError(f"--rung {rung}: study {study.study_name!r} has rungs 0 to {rungs.top} "
                          f"({', '.join(map(str, rungs.steps))} steps)")
    return rung


def rung_label(study: ReadableStudy, rung: int | None) -> str:
    """`rung 2 of 0-2 (900 steps)`, or empty for a plain study."""
    if rung is None:
        return ""
    rungs = StudyDefinition.from_attrs(study.user_attrs, study.study_name).rungs
    return f"rung {rung} of 0-{rungs.top} ({rungs.steps[rung]} steps)"


def pareto_front(study: ReadableStudy, trials: list[FrozenTrial] | None = None, *,
                 rung: int | None = None,
                 records: Mapping[int, TrialRecord] | None = None) -> list[FrozenTrial]:
    """The non-dominated complete, feasible trials, by trial number. A duplicate (the same
    architecture measured once, its values reused) appears once, as the trial that measured it.
    In a study with rungs only the candidates measured at one rung are compared (`shown_rung`).

    Computed here rather than with `study.best_trials`, which reads (and deep-copies) every
    trial again: `status` on a 1,000-trial study spent a third of its time there.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    records = records_of(trials, records)
    rung = shown_rung(study, trials, rung, records)
    candidates = [t for t in trials if t.state == TrialState.COMPLETE
                  and records[t.number].duplicate_of is None
                  and (rung is None or rung_of(t, records[t.number]) == rung)
                  and all(value <= 0 for value in t.constraints.values())]
    if not candidates:
        return []
    signs = np.array([-1.0 if d == optuna.study.StudyDirection.MAXIMIZE else 1.0
                      for d in study.directions])
    values = np.array([t.values for t in candidates], dtype=float) * signs  # all minimised
    front = []
    for index, row in enumerate(values):
        no_worse = (values <= row).all(axis=1)
        better = (values < row).any(axis=1)
        if not (no_worse & better).any():
            front.append(candidates[index])
    return sorted(front, key=lambda trial: trial.number)


@dataclass(frozen=True)
class Best:
    """The best trial for one objective."""

    value: float
    trial: int
    pattern: str | None


@dataclass(frozen=True)
class Training:
    """What each candidate is trained on and how (`best_lr_counts`: under a learning-rate
    sweep, how often each rate gave a task its best run; a rate that never wins is cost
    without information)."""

    suite: str | None
    steps: int | None
    seconds: float | None
    batch_size: int | None
    lr: float | list[float] | None
    best_lr_counts: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.best_lr_counts is None:
            del data["best_lr_counts"]
        return data


@dataclass(frozen=True)
class Fidelity:
    """A successive-halving study's rungs, its candidates per rung, and the rung shown; how
    many promotions continued a checkpoint (`steps_saved`: the steps per task they did not
    train again) and how many trained afresh although they could have continued; how many
    checkpoints are kept for promotions and how many were removed as spent
    (nas.continuation)."""

    rungs: list[int]
    eta: int
    candidates_per_rung: list[int]
    shown_rung: int
    shown_steps: int
    continued: int = 0
    retrained: int = 0
    steps_saved: int = 0
    checkpoints_kept: int = 0
    checkpoints_removed: int = 0


@dataclass(frozen=True)
class StudyStatus:
    """Trials by state, failures by reason, throughput, the best per objective, the front."""

    study: str
    objectives: tuple[Objective, ...]
    n_trials: int
    sampler: str
    training: Training
    states: dict[str, int]  # every name of STATES
    measured: int
    distinct_architectures: int
    duplicates: int
    failures: dict[str, int]  # kind of failure -> trials, most common first
    lost: dict[str, int]  # interrupted / worker died -> trials (they run again)
    pruned: dict[str, int]  # violated constraint or surplus -> trials
    trials_per_hour: float | None
    best: dict[str, Best]  # objective name -> its best trial
    pareto_size: int
    baselines: dict[str, int]  # preset -> its complete trial
    counted: int = 0  # new architectures measured: what n_trials counts (not duplicates)
    fidelity: Fidelity | None = None  # successive halving: the rungs; best and front at one

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["objectives"] = [{"name": o.name, "direction": o.direction}
                              for o in self.objectives]
        data["training"] = self.training.to_dict()
        data["best"] = {name: {f.name: getattr(best, f.name) for f in fields(best)}
                        for name, best in self.best.items()}
        if self.fidelity is None:
            del data["fidelity"]
        else:
            data["fidelity"] = {f.name: getattr(self.fidelity, f.name)
                                for f in fields(self.fidelity)}
        return data


def status(study: ReadableStudy, rung: int | None = None) -> StudyStatus:
    """What the study has found so far (see `StudyStatus`); in a study with rungs, the best
    and the front at one rung (`shown_rung`)."""
    trials = study.get_trials(deepcopy=False)
    records = records_of(trials)  # parsed once; every step below reads these
    counts = count_trials(study, trials, records)
    definition = StudyDefinition.from_attrs(study.user_attrs, study.study_name)
    rung = shown_rung(study, trials, rung, records)
    objectives = definition.objective_list
    measured = [t for t in trials if is_measured(t, records[t.number])]
    failures = Counter(failure_kind(records[t.number].failure) for t in trials
                       if t.state == TrialState.FAIL and is_measured(t, records[t.number]))
    # A lost trial with (some of) a result: its worker died between writing the result and
    # Optuna recording the values, and the heartbeat failed it.
    lost = Counter(INTERRUPTED if records[t.number].interrupted else
                   "copied while running" if records[t.number].copied_running else
                   DIED_AFTER_TRAINING if records[t.number].has_result else
                   "worker died"
                   for t in trials
                   if t.state == TrialState.FAIL and not is_measured(t, records[t.number]))
    pruned = Counter("surplus (budget reached)" if records[t.number].surplus else
                     next(iter(records[t.number].violations or {"pruned": 0}))
                     for t in trials if t.state == TrialState.PRUNED)
    complete = [t for t in trials if t.state == TrialState.COMPLETE
                and (rung is None or rung_of(t, records[t.number]) == rung)]
    best = {}
    for index, objective in enumerate(objectives):
        if complete:
            pick = max if objective.direction == MAXIMIZE else min
            trial = pick(complete, key=lambda t, i=index: t.values[i])
            best[objective.name] = Best(trial.values[index], trial.number,
                                        records[trial.number].pattern)
    return StudyStatus(
        study=study.study_name, objectives=objectives, n_trials=definition.n_trials,
        sampler=definition.sampler,
        training=training(definition, [records[t.number] for t in measured]),
        states={name: sum(1 for t in trials if t.state.name.lower() == name) for name in STATES},
        measured=counts.measured,
        distinct_architectures=len({records[t.number].fingerprint for t in measured}),
        duplicates=sum(1 for t in measured if records[t.number].duplicate_of is not None),
        failures=dict(failures.most_common()), lost=dict(lost.most_common()),
        pruned=dict(pruned.most_common()), trials_per_hour=_per_hour(measured), best=best,
        pareto_size=len(pareto_front(study, trials, rung=rung, records=records)),
        counted=counts.distinct,
        fidelity=None if rung is None else Fidelity(
            list(definition.rungs.steps), definition.rungs.eta,
            rung_counts(trials, definition.rungs, records), rung, definition.rungs.steps[rung],
            continued=sum(1 for t in measured if records[t.number].resumed_step is not None),
            retrained=sum(1 for t in measured if records[t.number].retrained is not None),
            steps_saved=sum(records[t.number].resumed_step or 0 for t in measured),
            **checkpoint_counts(study, trials)),
        baselines={records[t.number].baseline: t.number for t in trials
                   if records[t.number].baseline is not None
                   and t.state == TrialState.COMPLETE})


def checkpoint_counts(study: ReadableStudy, trials: list[FrozenTrial]) -> dict[str, int]:
    """Checkpoints uploaded for the study's trials: kept, and removed as spent."""
    stored = {artifact for trial in trials for artifact in stored_artifacts(trial)}
    removed = stored & set(removed_checkpoints(study_system_attrs(study)))
    return {"checkpoints_kept": len(stored - removed), "checkpoints_removed": len(removed)}


def training(definition: StudyDefinition, measured: list[TrialRecord]) -> Training:
    """What each candidate is trained on and how, from the definition and measured records."""
    budget = definition.budget
    rates = budget.get("lr")
    counts = None
    if isinstance(rates, (list, tuple)):
        wins = Counter(task.lr for record in measured
                       if record.duplicate_of is None and record.result is not None
                       for task in record.result.tasks.values())
        counts = {f"{rate:g}": wins.get(rate, 0) for rate in rates}
    return Training(definition.suite.get("name"), budget.get("steps"), budget.get("seconds"),
                    budget.get("batch_size"), rates, counts)


def _per_hour(trials: list[FrozenTrial]) -> float | None:
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    if len(trials) < 2 or not starts or not ends:
        return None
    hours = (max(ends) - min(starts)).total_seconds() / 3600
    return len(trials) / hours if hours > 0 else None


@dataclass(frozen=True)
class TrialRow:
    """One trial as a flat row: number, state, pattern, every objective, provenance."""

    trial: int
    state: str
    pattern: str
    values: dict[str, float | None]  # objective name -> value (None: no value)
    baseline: str | None
    duplicate_of: int | None
    failure: str | None  # the candidate's failure, or why it was infeasible
    seconds: float | None
    rung: int | None = None  # successive halving: the rung the trial trained at

    def to_dict(self) -> dict[str, Any]:
        """The row as `trials --json/--csv` print it: each objective a column of its own (and
        `rung` only when the trial has one, which only a study with rungs gives)."""
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == RUNG and value is None:
                continue
            data.update(value if f.name == "values" else {f.name: value})
        return data


# The columns of a table of no trials: the trial, its state and pattern.
EMPTY_COLUMNS = tuple(f.name for f in fields(TrialRow))[:3]


def trial_row(trial: FrozenTrial, objectives: tuple[Objective, ...],
              record: TrialRecord | None = None) -> TrialRow:
    """`record`: the trial's, if parsed already."""
    record = record or TrialRecord.from_frozen_trial(trial)
    return TrialRow(trial=trial.number, state=trial.state.name.lower(),
                    pattern=record.pattern or "",
                    values={o.name: trial.values[i] if trial.values else None
                            for i, o in enumerate(objectives)},
                    baseline=record.baseline, duplicate_of=record.duplicate_of,
                    failure=record.failure or _pruned_reason(trial, record),
                    seconds=record.wall_seconds, rung=record.rung)


def _pruned_reason(trial: FrozenTrial, record: TrialRecord) -> str | None:
    if trial.state != TrialState.PRUNED or not record.violations:
        return None
    return "infeasible: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in record.violations.items())


def trial_rows(study: ReadableStudy, *, state: str | None = None, sort: str | None = None,
               limit: int | None = None) -> list[TrialRow]:
    """Rows of `trials`, optionally of one state, sorted best-first by one objective."""
    objectives = objectives_of(study)
    if state is not None and state not in STATES:
        raise ReportError(f"state {state!r}: unknown (valid: {', '.join(STATES)})")
    trials = [t for t in study.get_trials(deepcopy=False)
              if state is None or t.state.name.lower() == state]
    if sort is not None:
        names = [o.name for o in objectives]
        if sort not in names:
            raise ReportError(f"sort {sort!r}: not an objective of this study "
                             f"(its objectives: {', '.join(names)})")
        objective = objectives[names.index(sort)]
        index = names.index(sort)
        scored = [t for t in trials if t.values]
        unscored = [t for t in trials if not t.values]
        scored.sort(key=lambda t: t.values[index], reverse=objective.direction == MAXIMIZE)
        trials = scored + unscored
    if limit is not None:
        trials = trials[:limit]
    return [trial_row(t, objectives) for t in trials]
