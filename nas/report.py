"""What a study has found, as plain data for the CLI's tables, JSON and CSV.

Everything is read from Optuna's records: trial states, values and the user attributes that
`nas.evaluate` records. Each function takes an `optuna.Study` or a `nas.snapshot.StudySnapshot`
(the same trials, read at once; what the CLI passes). Nothing here writes to the study.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.definition import StudyDefinition
from nas.evaluate import is_measured
from nas.halving import RUNG, default_rung, rung_counts, rung_of
from nas.objectives import MAXIMIZE, Objective
from nas.snapshot import ReadableStudy
from nas.study import count_trials

STATES = ("complete", "fail", "pruned", "running", "waiting")


def objectives_of(study: ReadableStudy) -> tuple[Objective, ...]:
    return StudyDefinition.from_attrs(study.user_attrs, study.study_name).objective_list


def failure_kind(reason: str) -> str:
    """`nan_loss at step 17` -> `nan_loss`; `RuntimeError: shape ...` -> `RuntimeError`."""
    reason = re.sub(r" \(duplicate of trial \d+\)$", "", reason)
    return re.split(r" at step |: ", reason, maxsplit=1)[0]


def shown_rung(study: ReadableStudy, trials: list[FrozenTrial],
               rung: int | None = None) -> int | None:
    """The rung at which a study with rungs is compared (`rung`, checked, or by default the
    highest one with enough candidates: nas.halving.default_rung); None for a plain study."""
    rungs = StudyDefinition.from_attrs(study.user_attrs, study.study_name).rungs
    if rungs is None:
        if rung is not None:
            raise ValueError(f"--rung {rung}: study {study.study_name!r} has no rungs "
                             "(every candidate trained the full budget)")
        return None
    if rung is None:
        return default_rung(trials, rungs)
    if not 0 <= rung <= rungs.top:
        raise ValueError(f"--rung {rung}: study {study.study_name!r} has rungs 0 to {rungs.top} "
                         f"({', '.join(map(str, rungs.steps))} steps)")
    return rung


def rung_label(study: ReadableStudy, rung: int | None) -> str:
    """`rung 2 of 0-2 (900 steps)`, or empty for a plain study."""
    if rung is None:
        return ""
    rungs = StudyDefinition.from_attrs(study.user_attrs, study.study_name).rungs
    return f"rung {rung} of 0-{rungs.top} ({rungs.steps[rung]} steps)"


def pareto_front(study: ReadableStudy, trials: list[FrozenTrial] | None = None, *,
                 rung: int | None = None) -> list[FrozenTrial]:
    """The non-dominated complete, feasible trials, by trial number. A duplicate (the same
    architecture measured once, its values reused) appears once, as the trial that measured it.
    In a study with rungs only the candidates measured at one rung are compared (`shown_rung`).

    Computed here rather than with `study.best_trials`, which reads (and deep-copies) every
    trial again: `status` on a 1,000-trial study spent a third of its time there.
    """
    import numpy as np

    trials = study.get_trials(deepcopy=False) if trials is None else trials
    rung = shown_rung(study, trials, rung)
    candidates = [t for t in trials if t.state == TrialState.COMPLETE
                  and "duplicate_of" not in t.user_attrs
                  and (rung is None or rung_of(t) == rung)
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


def status(study: ReadableStudy, rung: int | None = None) -> dict[str, Any]:
    """Trials by state, failures by reason, throughput, the best per objective, the front; in
    a study with rungs, the candidates per rung, and the best and the front at one rung."""
    trials = study.get_trials(deepcopy=False)
    counts = count_trials(study, trials)
    definition = StudyDefinition.from_attrs(study.user_attrs, study.study_name)
    rung = shown_rung(study, trials, rung)
    objectives = definition.objective_list
    measured = [t for t in trials if is_measured(t)]
    failures = Counter(failure_kind(t.user_attrs["failure"]) for t in trials
                       if t.state == TrialState.FAIL and "failure" in t.user_attrs)
    lost = Counter("interrupted" if t.user_attrs.get("interrupted") else "worker died"
                   for t in trials if t.state == TrialState.FAIL and not is_measured(t))
    pruned = Counter("surplus (budget reached)" if t.user_attrs.get("surplus") else
                     next(iter(t.user_attrs.get("violations") or {"pruned": 0}))
                     for t in trials if t.state == TrialState.PRUNED)
    complete = [t for t in trials if t.state == TrialState.COMPLETE
                and (rung is None or rung_of(t) == rung)]
    best = {}
    for index, objective in enumerate(objectives):
        if complete:
            pick = max if objective.direction == MAXIMIZE else min
            trial = pick(complete, key=lambda t, i=index: t.values[i])
            best[objective.name] = {"value": trial.values[index], "trial": trial.number,
                                    "pattern": trial.user_attrs.get("pattern")}
    return {
        "study": study.study_name,
        "objectives": [{"name": o.name, "direction": o.direction} for o in objectives],
        "n_trials": definition.n_trials,
        "sampler": definition.sampler,
        "training": training(definition, measured),
        "states": {name: sum(1 for t in trials if t.state.name.lower() == name)
                   for name in STATES},
        "measured": counts.distinct,
        "evaluations": counts.measured,
        "fidelity": None if rung is None else {
            "rungs": list(definition.rungs.steps), "eta": definition.rungs.eta,
            "candidates_per_rung": rung_counts(trials, definition.rungs),
            "shown_rung": rung, "shown_steps": definition.rungs.steps[rung]},
        "distinct_architectures": len({t.user_attrs.get("fingerprint") for t in measured}),
        "duplicates": sum(1 for t in measured if "duplicate_of" in t.user_attrs),
        "failures": dict(failures.most_common()),
        "lost": dict(lost.most_common()),
        "pruned": dict(pruned.most_common()),
        "trials_per_hour": _per_hour(measured),
        "best": best,
        "pareto_size": len(pareto_front(study, trials, rung=rung)),
        "baselines": {t.user_attrs["baseline"]: t.number for t in trials
                      if "baseline" in t.user_attrs and t.state == TrialState.COMPLETE},
    }


def training(definition: StudyDefinition, measured: list[FrozenTrial]) -> dict[str, Any]:
    """What each candidate is trained on and how; under a learning-rate sweep, how often each
    rate gave a task its best run (a rate that never wins is cost without information)."""
    budget = definition.budget
    summary = {"suite": definition.suite.get("name"),
               **{key: budget.get(key) for key in ("steps", "seconds", "batch_size", "lr")}}
    if isinstance(budget.get("lr"), (list, tuple)):
        trained = [t for t in measured if "duplicate_of" not in t.user_attrs]
        wins = Counter(task.get("lr") for trial in trained
                       for task in (trial.user_attrs.get("tasks") or {}).values())
        summary["best_lr_counts"] = {f"{rate:g}": wins.get(rate, 0) for rate in budget["lr"]}
    return summary


def _per_hour(trials: list[FrozenTrial]) -> float | None:
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    if len(trials) < 2 or not starts or not ends:
        return None
    hours = (max(ends) - min(starts)).total_seconds() / 3600
    return len(trials) / hours if hours > 0 else None


def trial_row(trial: FrozenTrial, objectives: tuple[Objective, ...]) -> dict[str, Any]:
    """One trial as a flat row: number, state, pattern, every objective, provenance."""
    attrs = trial.user_attrs
    row: dict[str, Any] = {"trial": trial.number, "state": trial.state.name.lower(),
                           "pattern": attrs.get("pattern", "")}
    for index, objective in enumerate(objectives):
        row[objective.name] = trial.values[index] if trial.values else None
    if RUNG in attrs:
        row["rung"] = attrs[RUNG]
    row["baseline"] = attrs.get("baseline")
    row["duplicate_of"] = attrs.get("duplicate_of")
    row["failure"] = attrs.get("failure") or _pruned_reason(trial)
    row["seconds"] = attrs.get("wall_seconds")
    return row


def _pruned_reason(trial: FrozenTrial) -> str | None:
    violations = trial.user_attrs.get("violations")
    if trial.state != TrialState.PRUNED or not violations:
        return None
    return "infeasible: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in violations.items())


def trial_rows(study: ReadableStudy, *, state: str | None = None, sort: str | None = None,
               limit: int | None = None) -> list[dict[str, Any]]:
    """Rows of `trials`, optionally of one state, sorted best-first by one objective."""
    objectives = objectives_of(study)
    if state is not None and state not in STATES:
        raise ValueError(f"state {state!r}: unknown (valid: {', '.join(STATES)})")
    trials = [t for t in study.get_trials(deepcopy=False)
              if state is None or t.state.name.lower() == state]
    if sort is not None:
        names = [o.name for o in objectives]
        if sort not in names:
            raise ValueError(f"sort {sort!r}: not an objective of this study "
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
