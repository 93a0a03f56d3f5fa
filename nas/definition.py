"""What defines a study, kept in the study's own user attributes so any machine can resume it.

A study is a search space, a task suite, a training budget, a list of objectives, a sampler and
a trial budget. All of it is stored with the study (Optuna user attributes, plain JSON), so
`hnas resume NAME` and `hnas worker` need only the name and the database; plain Optuna and
optuna-dashboard show the same attributes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from nas.objectives import Objective, ObjectiveError, format_objectives, parse_objectives
from search_spaces import SearchSpace
from search_spaces.errors import UserError
from nas.rungs import RungError, Rungs

SAMPLERS = ("nsga2", "tpe", "gp", "random", "grid")
MARKER, FORMAT_VERSION = "hnas_study_format", 1
# The JSON type of each stored field, checked when a study is read back.
STORED_TYPES: dict[str, tuple[type, ...]] = {
    "space_yaml": (str,), "space_fingerprint": (str,), "suite": (dict,),
    "suite_fingerprint": (str,), "budget": (dict,), "objectives": (str,), "sampler": (str,),
    "n_trials": (int,), "seed": (int, type(None)), "baselines": (list,), "versions": (dict,),
    "fidelity": (dict, type(None))}
REQUIRED = ("space_yaml", "space_fingerprint", "suite", "suite_fingerprint", "budget",
            "objectives")


class DefinitionError(UserError):
    """A study definition that cannot be used, or one that clashes with the stored one."""


# The parts of a definition that make it another experiment (`Change.field`).
SPACE, SUITE, BUDGET, OBJECTIVES = "space", "suite", "budget", "objectives"
RUNGS = "rungs"


@dataclass(frozen=True)
class Change:
    """One way a definition differs from the stored one: the space (old and new
    fingerprints), the suite (old and new names; equal names: its tasks changed), the budget
    (the differing entries only) or the objectives (old and new lists)."""

    field: str  # SPACE, SUITE, BUDGET, RUNGS or OBJECTIVES
    old: Any
    new: Any


class DefinitionChanged(DefinitionError):
    """An existing study was opened with a different definition. `changes` says how (the CLI
    formats them); `fixed`: one of them can never be accepted (the objectives: Optuna fixes
    the directions), so `--allow-changes` would not help."""

    def __init__(self, study: str, changes: tuple[Change, ...]) -> None:
        self.study = study
        self.changes = changes
        self.fixed = any(change.field == OBJECTIVES for change in changes)
        super().__init__(f"study {study!r} exists with a different "
                         + ", ".join(change.field for change in changes))


@dataclass(frozen=True)
class StudyDefinition:
    space_yaml: str
    space_fingerprint: str
    suite: dict[str, Any]  # Suite.to_dict(): the tasks themselves, not only a preset's name
    suite_fingerprint: str
    budget: dict[str, Any]  # Budget.to_dict()
    objectives: str  # "quality,cache@131072"
    sampler: str = "nsga2"
    n_trials: int = 20
    seed: int = 0
    baselines: tuple[str, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    # None: every candidate trains the full budget. Rungs.to_dict(): successive halving, whose
    # last rung is the budget's steps (nas.rungs, nas.halving).
    fidelity: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.fidelity is not None:
            try:
                rungs = Rungs.from_dict(self.fidelity)
            except RungError as error:
                raise DefinitionError(str(error)) from None
            if self.budget.get("steps") != rungs.full_steps:
                raise DefinitionError(f"fidelity: the last rung ({rungs.full_steps} steps) is "
                                      f"not the budget's steps ({self.budget.get('steps')})")
        if self.sampler not in SAMPLERS:
            raise DefinitionError(f"sampler {self.sampler!r}: unknown (valid: "
                                  f"{', '.join(SAMPLERS)})")
        if self.n_trials < 1:
            raise DefinitionError(f"n_trials: expected at least 1, got {self.n_trials}")

    @property
    def rungs(self) -> Rungs | None:
        """The successive-halving rungs, or None for a study that trains every candidate at
        the full budget."""
        return None if self.fidelity is None else Rungs.from_dict(self.fidelity)

    @property
    def objective_list(self) -> tuple[Objective, ...]:
        return parse_objectives(self.objectives)

    @property
    def directions(self) -> list[str]:
        return [objective.direction for objective in self.objective_list]

    def capped_trials(self) -> int:
        """`n_trials`, but no more than the space's distinct parameter assignments: a search
        of a small space measures each architecture at most once and then stops."""
        size = self.space().size()
        return self.n_trials if size is None else min(self.n_trials, size)

    def task_weights(self) -> dict[str, float]:
        """Each task's weight in the suite's quality, read from the stored suite (no torch)."""
        return {task["name"]: float(task.get("weight", 1.0))
                for task in self.suite.get("tasks", [])}

    def space(self):
        return SearchSpace.from_yaml(self.space_yaml, "stored space")

    def load_suite(self):
        from trials.tasks import Suite  # torch: `hnas status` reads definitions without it

        return Suite.from_dict(self.suite, "stored suite")

    def load_budget(self):
        from trials.train import Budget  # torch and Lightning, as load_suite

        return Budget.from_dict(self.budget)

    # -- storing ----------------------------------------------------------------------------------

    def to_attrs(self) -> dict[str, Any]:
        """One user attribute per field (as the dashboard shows them), plus a format marker."""
        data = asdict(self)
        data["baselines"] = list(self.baselines)
        return {MARKER: FORMAT_VERSION, **data}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], study_name: str) -> "StudyDefinition":
        if attrs.get(MARKER) != FORMAT_VERSION:
            raise DefinitionError(f"study {study_name!r} was not created by hnas (its user "
                                  f"attributes have no {MARKER!r})")
        data = {name: attrs[name] for name in cls.__dataclass_fields__ if name in attrs}
        for name, types in STORED_TYPES.items():
            value = data.get(name)
            if name not in data and name in REQUIRED:
                raise DefinitionError(f"study {study_name!r}: its attribute {name!r} is missing")
            if name in data and (isinstance(value, bool) or not isinstance(value, types)):
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                raise DefinitionError(f"study {study_name!r}: its attribute {name!r} is damaged "
                                      f"({shown}, expected {types[0].__name__})")
        if any(not isinstance(name, str) for name in data.get("baselines", ())):
            raise DefinitionError(f"study {study_name!r}: its attribute 'baselines' is damaged")
        data["baselines"] = tuple(data.get("baselines", ()))
        try:
            definition = cls(**data)
            definition.objective_list  # noqa: B018 - parsed here so a damaged one is named now
        except (DefinitionError, ObjectiveError) as error:
            raise DefinitionError(f"study {study_name!r}: {error}") from None
        return definition

    def check(self, study_name: str) -> None:
        """Build the stored space, suite and budget once, so that a damaged one is named before
        a worker starts rather than in the middle of a trial."""
        for what, build in (("space", self.space), ("suite", self.load_suite),
                            ("budget", self.load_budget)):
            try:
                build()
            except (ValueError, TypeError, KeyError) as error:  # each loader's own error types
                reason = str(error).splitlines()[0] if str(error) else repr(error)
                raise DefinitionError(f"study {study_name!r}: its stored {what} cannot be "
                                      f"used: {reason}") from None

    def resumable_attrs(self) -> dict[str, Any]:
        """The attributes anyone continuing the study may change: the trial budget and the
        sampler (neither changes what a trial measures)."""
        return {"n_trials": self.n_trials, "sampler": self.sampler}

    def with_trials(self, n_trials: int) -> "StudyDefinition":
        return StudyDefinition(**{**asdict(self), "baselines": self.baselines,
                                  "n_trials": n_trials})

    # -- comparing --------------------------------------------------------------------------------

    def changes_from(self, stored: "StudyDefinition") -> tuple[Change, ...]:
        """What makes this definition a different experiment from `stored` (empty: the same)."""
        changes = []
        if self.space_fingerprint != stored.space_fingerprint:
            changes.append(Change(SPACE, stored.space_fingerprint, self.space_fingerprint))
        if self.suite_fingerprint != stored.suite_fingerprint:
            changes.append(Change(SUITE, stored.suite.get("name"), self.suite.get("name")))
        if _comparable(self.budget) != _comparable(stored.budget):
            keys = sorted(k for k in set(self.budget) | set(stored.budget)
                          if self.budget.get(k) != stored.budget.get(k))
            changes.append(Change(BUDGET, {k: stored.budget.get(k) for k in keys},
                                  {k: self.budget.get(k) for k in keys}))
        if self.rungs != stored.rungs:
            changes.append(Change(RUNGS, _rungs_text(stored.rungs), _rungs_text(self.rungs)))
        if format_objectives(self.objective_list) != format_objectives(stored.objective_list):
            changes.append(Change(OBJECTIVES, stored.objectives, self.objectives))
        return tuple(changes)


def baselines_attrs(names: list[str]) -> dict[str, Any]:
    """The study attribute naming every baseline enqueued (added to as a study goes on)."""
    return {"baselines": sorted(names)}


def _rungs_text(rungs: Rungs | None) -> str:
    return "none" if rungs is None else f"{','.join(map(str, rungs.steps))} eta {rungs.eta}"


def _comparable(budget: dict[str, Any]) -> str:
    return json.dumps(budget, sort_keys=True, default=str)


def toolkit_versions() -> dict[str, str]:
    versions = {}
    for package in ("hybrid-nas", "optuna", "torch", "lightning"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions
