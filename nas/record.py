"""What a trial stores: the schema of its Optuna user attributes, written and read here only.

Everything the toolkit knows about a trial is kept in its user attributes (plain JSON), so
plain Optuna and optuna-dashboard read it too. The attribute keys are the constants below;
`TrialRecord.to_user_attrs` is the one writer and `TrialRecord.from_frozen_trial` the one
reader, in the spirit of Optuna's `FrozenTrial` and its `_CONSTRAINTS_KEY`-style constants.

    sampled     pattern, arch, fingerprint, analytic     every trial that drew a candidate
    trained     quality, loss, tasks, measured, device,  the training result (a duplicate
                precision, kernels, failure               copies its twin's)
                wall_seconds                              this trial's own training time
    outcome     violations      infeasible or invalid: pruned, never trained
                duplicate_of    the number of the trial that trained the same architecture
                surplus         pruned: the study reached its budget meanwhile
                interrupted     Ctrl-C during training (the trial is queued again)
                copied_running  running in the source when the study was copied: failed in
                                the copy, where no worker runs it (queued again there)
    provenance  baseline        the preset this enqueued trial is
                retry_of        the number of the lost trial this one runs again
    rungs       rung            successive halving (nas.halving): the rung this trial trained at
                candidate       the number of the candidate's first-rung trial
                promoted_from   the number of the trial at the rung below (a promotion)
                rung_scores     {"<steps>": {"<objective>": value}} at every rung so far
                promotion_taken pruned: another trial holds this promotion's claim
                checkpoint      artifact id of the training states where this rung's decay
                                began (nas.continuation), which a promotion continues from
                                (removed from the store once spent; the study records it)
                resumed_step    a promotion continued its parent's checkpoint from this step
                                (it trained its rung's steps minus these)
                retrained       why a promotion trained afresh although it could have
                                continued (its parent's checkpoint missing or unreadable)

The format is the one written since the first release (tests/data/format1_study.db); a key a
trial does not have reads as the field's default. No torch, no Optuna: the CLI's start-up
imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

PATTERN = "pattern"
ARCH = "arch"
FINGERPRINT = "fingerprint"
ANALYTIC = "analytic"
QUALITY = "quality"
LOSS = "loss"
TASKS = "tasks"
MEASURED = "measured"
DEVICE = "device"
PRECISION = "precision"
KERNELS = "kernels"
FAILURE = "failure"
WALL_SECONDS = "wall_seconds"
VIOLATIONS = "violations"
DUPLICATE_OF = "duplicate_of"
SURPLUS = "surplus"
INTERRUPTED = "interrupted"
COPIED_RUNNING = "copied_running"
BASELINE = "baseline"
RETRY_OF = "retry_of"
RUNG = "rung"
CANDIDATE = "candidate"
PROMOTED_FROM = "promoted_from"
RUNG_SCORES = "rung_scores"
PROMOTION_TAKEN = "promotion_taken"
CHECKPOINT = "checkpoint"
RESUMED_STEP = "resumed_step"
RETRAINED = "retrained"

SAMPLED_KEYS = (PATTERN, ARCH, FINGERPRINT, ANALYTIC)
# The training result, copied from a measured trial to its duplicates.
RESULT_KEYS = (QUALITY, LOSS, TASKS, MEASURED, DEVICE, PRECISION, KERNELS, FAILURE)
RUNG_KEYS = (RUNG, CANDIDATE, PROMOTED_FROM, RUNG_SCORES, PROMOTION_TAKEN, CHECKPOINT,
             RESUMED_STEP, RETRAINED)
KEYS = (*SAMPLED_KEYS, *RESULT_KEYS, WALL_SECONDS, VIOLATIONS, DUPLICATE_OF, SURPLUS,
        INTERRUPTED, COPIED_RUNNING, BASELINE, RETRY_OF, *RUNG_KEYS)

# The JSON type of each attribute, checked when a study is read (`nas.snapshot`).
ATTR_TYPES: dict[str, tuple[type, ...]] = {
    PATTERN: (str,), ARCH: (dict,), FINGERPRINT: (str,), ANALYTIC: (dict,),
    QUALITY: (int, float), LOSS: (int, float, type(None)), TASKS: (dict,),
    MEASURED: (dict,), DEVICE: (str,), WALL_SECONDS: (int, float),
    FAILURE: (str, type(None)), VIOLATIONS: (dict,), DUPLICATE_OF: (int,),
    BASELINE: (str,), RETRY_OF: (int,), INTERRUPTED: (bool,), COPIED_RUNNING: (bool,),
    SURPLUS: (bool,),
    RUNG: (int,), CANDIDATE: (int,), PROMOTED_FROM: (int,), RUNG_SCORES: (dict,),
    PROMOTION_TAKEN: (bool,), CHECKPOINT: (str,), RESUMED_STEP: (int,), RETRAINED: (str,),
}
_JSON_NAMES = {str: "text", dict: "a mapping", int: "a number", float: "a number",
               bool: "true or false", type(None): "null"}


class DamagedRecord(ValueError):
    """A stored attribute of the wrong JSON type; the message names the key and the value."""


def check_attrs(attrs: Mapping[str, Any]) -> None:
    """DamagedRecord when a known attribute has the wrong JSON type."""
    for key, types in ATTR_TYPES.items():
        value = attrs.get(key)
        if key in attrs and (not isinstance(value, types) or
                             (isinstance(value, bool) and bool not in types)):
            wanted = " or ".join(dict.fromkeys(_JSON_NAMES[t] for t in types))
            raise DamagedRecord(f"user attribute {key!r} is {short(value)}, expected {wanted}")


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class TaskRecord:
    """One task's trained result (`trials.TaskResult`, less what the study does not keep)."""

    metrics: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    tokens_per_s: float = 0.0
    curve: list[Any] = field(default_factory=list)
    failure: str | None = None
    lr: float | None = None  # the peak rate of the reported run
    sweep: list[Any] = field(default_factory=list)  # every rate's run under a sweep

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "steps": self.steps,
                "tokens_per_s": self.tokens_per_s, "curve": self.curve,
                "failure": self.failure, "lr": self.lr, "sweep": self.sweep}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TaskRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


@dataclass(frozen=True)
class TrainedResult:
    """What training a candidate measured; a duplicate records its twin's.

    `failure`: why the candidate failed (NaN loss, oom, a non-finite objective), None when
    it did not. `loss`: the suite-weighted mean of the task losses.
    """

    quality: float | None = None
    loss: float | None = None
    tasks: dict[str, TaskRecord] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)
    device: str | None = None
    precision: str | None = None
    kernels: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @classmethod
    def from_trial_result(cls, result: Any, weights: Mapping[str, float]) -> "TrainedResult":
        """From a `trials.TrialResult`; `weights`: each task's weight in the suite (1 if not
        named) for the mean loss."""
        losses = [(weights.get(name, 1.0), task.metrics["loss"])
                  for name, task in result.tasks.items() if "loss" in task.metrics]
        total = sum(weight for weight, _ in losses)
        return cls(
            quality=result.quality,
            loss=sum(w * loss for w, loss in losses) / total if total else None,
            tasks={name: TaskRecord(task.metrics, task.steps, task.tokens_per_s,
                                    list(task.curve), task.failure, task.lr, list(task.sweep))
                   for name, task in result.tasks.items()},
            measured=dict(result.measured), device=result.device, precision=result.precision,
            kernels=dict(result.kernels), failure=result.failure)


@dataclass(frozen=True)
class TrialRecord:
    """Everything the toolkit stored on one trial (see the module's docstring for the keys).

    A record holds what was written so far: `result` is None until the candidate was trained
    (or its twin's result copied), and a partial record writes only its own keys, which is
    how the evaluator records a trial step by step.
    """

    pattern: str | None = None
    arch: dict[str, Any] | None = None  # ArchConfig.to_dict()
    fingerprint: str | None = None
    analytic: dict[str, float] | None = None
    result: TrainedResult | None = None
    wall_seconds: float | None = None
    violations: dict[str, Any] | None = None
    duplicate_of: int | None = None
    surplus: bool = False
    interrupted: bool = False
    copied_running: bool = False
    baseline: str | None = None
    retry_of: int | None = None
    rung: int | None = None
    candidate: int | None = None
    promoted_from: int | None = None
    rung_scores: dict[str, Any] | None = None
    promotion_taken: bool = False
    checkpoint: str | None = None
    resumed_step: int | None = None
    retrained: str | None = None

    @property
    def failure(self) -> str | None:
        return None if self.result is None else self.result.failure

    # -- the one writer ---------------------------------------------------------------------

    def to_user_attrs(self) -> dict[str, Any]:
        """The user attributes of this record: the keys of the fields it has, in the stored
        format (a trained result writes every key of its own, `failure` null when none)."""
        attrs: dict[str, Any] = {}
        for key, value in ((PATTERN, self.pattern), (ARCH, self.arch),
                           (FINGERPRINT, self.fingerprint), (ANALYTIC, self.analytic)):
            if value is not None:
                attrs[key] = value
        for key, value in ((WALL_SECONDS, self.wall_seconds), (VIOLATIONS, self.violations),
                           (DUPLICATE_OF, self.duplicate_of), (BASELINE, self.baseline),
                           (RETRY_OF, self.retry_of), (RUNG, self.rung),
                           (CANDIDATE, self.candidate), (PROMOTED_FROM, self.promoted_from),
                           (RUNG_SCORES, self.rung_scores), (CHECKPOINT, self.checkpoint),
                           (RESUMED_STEP, self.resumed_step), (RETRAINED, self.retrained)):
            if value is not None:
                attrs[key] = value
        for key, flag in ((SURPLUS, self.surplus), (INTERRUPTED, self.interrupted),
                          (COPIED_RUNNING, self.copied_running),
                          (PROMOTION_TAKEN, self.promotion_taken)):
            if flag:
                attrs[key] = True
        # The evaluator writes these keys one storage call each, in this order, and a worker
        # killed in between leaves a prefix. So the result comes last and `failure` (always
        # written, null when none) is its last key: a copied result is never seen without its
        # `duplicate_of`, and a failure reason is only seen once the whole result is there.
        if self.result is not None:
            result = self.result
            attrs.update({QUALITY: result.quality, LOSS: result.loss,
                          TASKS: {name: task.to_dict() for name, task in result.tasks.items()},
                          MEASURED: result.measured, DEVICE: result.device,
                          PRECISION: result.precision, KERNELS: result.kernels,
                          FAILURE: result.failure})
        return attrs

    # -- the one reader ---------------------------------------------------------------------

    @classmethod
    def from_user_attrs(cls, attrs: Mapping[str, Any]) -> "TrialRecord":
        result = None
        if any(key in attrs for key in RESULT_KEYS):
            result = TrainedResult(
                quality=attrs.get(QUALITY), loss=attrs.get(LOSS),
                tasks={name: TaskRecord.from_dict(task)
                       for name, task in (attrs.get(TASKS) or {}).items()},
                measured=attrs.get(MEASURED) or {}, device=attrs.get(DEVICE),
                precision=attrs.get(PRECISION), kernels=attrs.get(KERNELS) or {},
                failure=attrs.get(FAILURE))
        return cls(pattern=attrs.get(PATTERN), arch=attrs.get(ARCH),
                   fingerprint=attrs.get(FINGERPRINT), analytic=attrs.get(ANALYTIC),
                   result=result, wall_seconds=attrs.get(WALL_SECONDS),
                   violations=attrs.get(VIOLATIONS), duplicate_of=attrs.get(DUPLICATE_OF),
                   surplus=bool(attrs.get(SURPLUS)), interrupted=bool(attrs.get(INTERRUPTED)),
                   copied_running=bool(attrs.get(COPIED_RUNNING)),
                   baseline=attrs.get(BASELINE), retry_of=attrs.get(RETRY_OF),
                   rung=attrs.get(RUNG), candidate=attrs.get(CANDIDATE),
                   promoted_from=attrs.get(PROMOTED_FROM), rung_scores=attrs.get(RUNG_SCORES),
                   promotion_taken=bool(attrs.get(PROMOTION_TAKEN)),
                   checkpoint=attrs.get(CHECKPOINT), resumed_step=attrs.get(RESUMED_STEP),
                   retrained=attrs.get(RETRAINED))

    @classmethod
    def from_frozen_trial(cls, trial: Any) -> "TrialRecord":
        """The record of an `optuna.trial.FrozenTrial` (or a live `optuna.Trial`)."""
        return cls.from_user_attrs(trial.user_attrs)

    # -- what a record says -----------------------------------------------------------------

    @property
    def has_result(self) -> bool:
        """Some of a training result was recorded (whole or not: see `is_measured`)."""
        return self.result is not None

    def retried(self, number: int) -> "TrialRecord":
        """The record a lost trial's retry starts from: what trial `number` was asked to do (a
        baseline, a promotion), none of what it did (its result, its claims' keys, a twin)."""
        again = TrialRecord(baseline=self.baseline, retry_of=number)
        if self.rung:  # a promotion runs again as the same promotion (nas.halving)
            again = replace(again, rung=self.rung, candidate=self.candidate,
                            promoted_from=self.promoted_from)
        return again

    def with_failure(self, reason: str) -> "TrialRecord":
        """This record with its candidate failed for `reason` (a non-finite objective)."""
        return replace(self, result=replace(self.result or TrainedResult(), failure=reason))


def records_of(trials: Any, records: Mapping[int, TrialRecord] | None = None
               ) -> Mapping[int, TrialRecord]:
    """Each trial's record by trial number: `records` when the caller parsed them already (a
    command parses each trial once and passes them on), else parsed here, once each."""
    if records is not None:
        return records
    return {trial.number: TrialRecord.from_frozen_trial(trial) for trial in trials}


def is_measured(trial: Any, record: TrialRecord | None = None) -> bool:
    """A finished evaluation: complete, or failed for a reason of the candidate's own, recorded
    as its result's `failure`. Not a dead worker's trial or a Ctrl-C, which run again, even
    with a result written: a worker killed before Optuna's tell leaves a whole result with no
    failure, or a prefix of one (`TrialRecord.to_user_attrs` says in which order). `trial`: an
    Optuna `FrozenTrial`, whose state is read by name so that this module loads without
    Optuna; `record`: its record, if parsed already."""
    state = trial.state.name
    if state != "FAIL":
        return state == "COMPLETE"
    return (record or TrialRecord.from_frozen_trial(trial)).failure is not None
