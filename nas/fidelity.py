"""How far a study's low budget predicts its high one: rank correlations read from its trials.

    study with rungs     for each pair of consecutive rungs (r, r+1), every measured objective:
                         the candidates complete at both rungs, their values at r against r+1
    plain study          learning-curve points: the suite-weighted test accuracy (and loss) at
                         curve step k against the trial's final quality (and loss), over the
                         trials whose every task has a point at k

Each row gives Spearman's rho, Kendall's tau-b (nas.ranking) and the count n they rest on; a
count under 3 gives NaN, not a number that looks like evidence. Curve points score a few test
batches (`hnas search` records them on 4), the final score the whole test set, so a plain
study's figures include that noise too. Reads only; torch-free.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from nas.definition import StudyDefinition
from nas.halving import candidate_of, is_duplicate, rung_of
from nas.ranking import kendall_tau, spearman
from nas.record import LOSS, QUALITY, TrialRecord

MIN_PAIRS = 3


@dataclass(frozen=True)
class Agreement:
    low: int  # steps of the cheap score
    high: int  # steps of the score it should predict
    objective: str
    n: int
    spearman: float
    kendall: float
    source: str  # "rungs" or "curve"

    def to_dict(self) -> dict[str, Any]:
        """The row as JSON data: a figure that is NaN (too few candidates) is null, since
        strict JSON readers refuse `NaN`."""
        return {key: None if isinstance(value, float) and math.isnan(value) else value
                for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Pair:
    """The values of one objective at a low and a high budget, candidate by candidate."""

    low: int
    high: int | None
    objective: str
    trials: list[int]  # the trial measured at the low budget, per candidate
    low_values: list[float]
    high_values: list[float]
    source: str

    @property
    def agreement(self) -> Agreement:
        xs, ys = self.low_values, self.high_values
        if len(xs) < MIN_PAIRS:
            return Agreement(self.low, self.high, self.objective, len(xs), math.nan, math.nan,
                             self.source)
        return Agreement(self.low, self.high, self.objective, len(xs), spearman(xs, ys),
                         kendall_tau(xs, ys), self.source)


def pairs(study: Any) -> list[Pair]:
    """Every (low budget, high budget, objective) of an `optuna.Study` or `StudySnapshot`."""
    definition = StudyDefinition.from_attrs(study.user_attrs, study.study_name)
    trials = [t for t in study.get_trials(deepcopy=False)
              if t.state == TrialState.COMPLETE and not is_duplicate(t)]
    if definition.rungs is not None:
        return _rung_pairs(definition, trials)
    return _curve_pairs(definition, trials)


def agreements(study: Any) -> list[Agreement]:
    """The rows of `hnas fidelity`."""
    return [pair.agreement for pair in pairs(study)]


def _rung_pairs(definition: StudyDefinition, trials: list[FrozenTrial]) -> list[Pair]:
    rungs = definition.rungs
    by_rung: list[dict[int, FrozenTrial]] = [{} for _ in rungs.steps]
    for trial in trials:
        rung = rung_of(trial)
        candidate = candidate_of(trial)
        if rung < len(by_rung) and candidate is not None:
            by_rung[rung][candidate] = trial
    rows = []
    measured = [(index, o) for index, o in enumerate(definition.objective_list) if o.measured]
    for rung in range(rungs.top):
        both = sorted(set(by_rung[rung]) & set(by_rung[rung + 1]))
        for index, objective in measured:
            rows.append(Pair(rungs.steps[rung], rungs.steps[rung + 1], objective.name,
                             [by_rung[rung][c].number for c in both],
                             [by_rung[rung][c].values[index] for c in both],
                             [by_rung[rung + 1][c].values[index] for c in both], "rungs"))
    return rows


def curve_score(record: TrialRecord, weights: dict[str, float],
                step: int) -> dict[str, float] | None:
    """Suite-weighted accuracy and loss of the trial's curve points at `step`, or None when a
    task has no point there."""
    tasks = record.result.tasks if record.result is not None else {}
    points = {}
    for name in weights:
        point = next((p for p in (tasks[name].curve if name in tasks else [])
                      if p.get("step") == step), None)
        if point is None:
            return None
        points[name] = point
    total = sum(weights.values())
    return {key: sum(weights[name] * points[name][key] for name in weights) / total
            for key in ("accuracy", LOSS)}


def _curve_pairs(definition: StudyDefinition, trials: list[FrozenTrial]) -> list[Pair]:
    weights = definition.task_weights()
    records = [(t.number, TrialRecord.from_frozen_trial(t)) for t in trials]
    records = [(n, r) for n, r in records if r.result is not None]
    steps = sorted({point["step"] for _, record in records
                    for task in record.result.tasks.values()
                    for point in task.curve if isinstance(point.get("step"), int)})
    final = definition.budget.get("steps")
    rows = []
    for objective, key in ((QUALITY, "accuracy"), (LOSS, LOSS)):
        for step in steps:
            if final is not None and step >= final:
                continue
            numbers, xs, ys = [], [], []
            for number, record in records:
                score = curve_score(record, weights, step)
                end = getattr(record.result, objective)
                if score is not None and isinstance(end, (int, float)):
                    numbers.append(number)
                    xs.append(score[key])
                    ys.append(end)
            rows.append(Pair(step, final, objective, numbers, xs, ys, "curve"))
    return rows
