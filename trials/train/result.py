"""TrialResult: everything one candidate's evaluation produced, as plain JSON-able data."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

OK, FAILED = "ok", "failed"


@dataclass
class TaskResult:
    """One task: final test metrics, the learning curve, and how the training went.

    `lr` is the peak learning rate of the run these metrics come from. Under a learning-rate
    sweep, `sweep` has one entry per rate tried (`lr`, `accuracy`, `loss`, `steps`, `failure`),
    the metrics and curve are the best run's, and `train_seconds` covers every run.
    """

    name: str
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)  # {"step", "loss", "accuracy"}
    steps: int = 0
    train_seconds: float = 0.0
    tokens_per_s: float = 0.0
    failure: str | None = None
    lr: float | None = None
    sweep: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Not a field, never serialised: {rate: trials.train.module.TrainingState} where a wsd
        # schedule's decay began, for continuing the run (nas.continuation stores them).
        self.checkpoints: dict[float, Any] = {}


@dataclass
class TrialResult:
    """The evaluation of one architecture on one suite under one budget.

    `status` is "ok" or "failed"; a failed result says why in `failure` (`nan_loss at step 17`,
    `oom`, or `ExceptionType: message`) and keeps whatever was measured before it failed.
    """

    pattern: str
    fingerprint: str
    suite: str
    status: str = OK
    failure: str | None = None
    quality: float | None = None
    tasks: dict[str, TaskResult] = field(default_factory=dict)
    analytic: dict[str, Any] = field(default_factory=dict)  # the cost model's numbers
    measured: dict[str, float] = field(default_factory=dict)  # tokens/s, memory, decode latency
    device: str = "cpu"
    precision: str = "32-true"
    kernels: dict[str, str] = field(default_factory=dict)  # op -> what ran (dispatch.Ran)
    wall_seconds: float = 0.0
    seed: int = 0
    budget: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Not a field, never serialised: {task: {rate: TrainingState}} (TaskResult.checkpoints).
        self.checkpoints: dict[str, dict[float, Any]] = {}

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrialResult":
        data = dict(data)
        data["tasks"] = {name: TaskResult(**task) for name, task in data.get("tasks", {}).items()}
        return cls(**data)
