"""Suites: weighted lists of tasks, the quality score, presets and YAML files.

    name: my_suite
    difficulty: easy         # easy | medium | hard: a label stored with results, nothing more
    seed: 0                  # data seed of every task (train and test are its two streams)
    tasks:
      - task: mqar           # a key of TASKS
        name: mqar_small     # optional, default the task's label (mqar_64x4); unique
        weight: 2            # > 0, default 1
        n_train: 1024        # examples, defaults 1024 and 256
        n_test: 256
        settings: {seq_len: 64, num_kv_pairs: 4, vocab_size: 64}   # the task's fields
    training:                # optional: the budget the suite was calibrated at, the default
      steps: 600             # of hnas search (of hnas train but for its --steps); lr,
      lr: 0.003              # schedule (cosine, wsd, constant) and warmup (a fraction of the
      schedule: constant     # steps) left out: the Budget's defaults
      warmup: 0.27

Quality is the weight-averaged test accuracy over the tasks (`Suite.quality`); `Suite.summary`
adds every task's accuracy and loss, and bits per byte for byte-level LM.

Presets (`PRESETS`, `load_suite(name)`): `quick` (seconds per candidate on a CPU: MQAR 64x4 with
a 64-token vocabulary and 16384 training examples, and a 64-token in-context recall), `mad` (the
six MAD tasks at their baseline settings), `mqar` (the four MQAR difficulties), `lm` (byte-level
LM on the default corpus), `capacity` (MQAR 256x32: more key-value pairs than a small recurrent
state holds; a GPU-scale suite, see `capacity_suite`), `recall64` (MQAR 64x8, the capacity-bound
suite calibrated for a CPU; see `recall64_suite`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from search_spaces.errors import UserError, shorten
from search_spaces.yaml_input import is_file, load_yaml, read_text
from trials.registry import Registry
from trials.tasks.base import Task, TaskData, TaskError
from trials.tasks.byte_lm import ByteLM
from trials.tasks.cache import load_splits
from trials.tasks.compression import Compression
from trials.tasks.fuzzy_recall import FuzzyRecall
from trials.tasks.in_context_recall import InContextRecall
from trials.tasks.memorization import Memorization
from trials.tasks.mqar import MQAR
from trials.tasks.noisy_recall import NoisyRecall
from trials.tasks.selective_copying import SelectiveCopying

TASKS = Registry("task", {cls.kind: cls for cls in (
    MQAR, InContextRecall, NoisyRecall, FuzzyRecall, SelectiveCopying, Compression, Memorization,
    ByteLM)})
DIFFICULTIES = ("easy", "medium", "hard")
DEFAULT_N_TRAIN, DEFAULT_N_TEST = 1024, 256


class SuiteError(UserError):
    """A bad suite: one line naming the file (if any), the key and the value."""


@dataclass(frozen=True)
class SuiteEntry:
    task: Task
    weight: float = 1.0
    n_train: int = DEFAULT_N_TRAIN
    n_test: int = DEFAULT_N_TEST
    name: str | None = None  # None: the task's label

    def __post_init__(self) -> None:
        if self.name is None:
            object.__setattr__(self, "name", self.task.label)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task.kind, "name": self.name, "weight": self.weight,
                "n_train": self.n_train, "n_test": self.n_test, "settings": self.task.settings()}


@dataclass(frozen=True)
class SuiteTraining:
    """The training a suite was calibrated at: what `hnas search` gives each candidate when
    --budget-steps and --lr are not given (and `hnas train`, but for its --steps). `steps` per
    task at peak rate `lr` under `schedule` (a Budget schedule), warming up over the fraction
    `warmup` of the steps; None: the Budget's default. Advice about the suite, not part of its
    tasks: the fingerprint leaves it out, and a study records the budget it actually used."""

    steps: int = 100
    lr: float | None = None
    schedule: str | None = None
    warmup: float | None = None

    def __post_init__(self) -> None:
        # `schedule` is checked by `with_known_schedule` (on reading YAML) and where a Budget is
        # built: trials.train imports this module, so it cannot be imported here at import time
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise SuiteError(f"training.steps: expected a whole number >= 1, got {self.steps!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise SuiteError(f"training.lr: expected a positive number, got {self.lr!r}")
        if self.warmup is not None and not 0 <= self.warmup < 1:
            raise SuiteError(f"training.warmup: expected a fraction of the steps in [0, 1), got "
                             f"{self.warmup!r}")

    def with_known_schedule(self) -> SuiteTraining:
        """self, once `schedule` is checked against the Budget's schedules."""
        from trials.train.budget import SCHEDULES  # not at import time: see __post_init__

        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise SuiteError(f"training.schedule: expected one of {', '.join(SCHEDULES)}, got "
                             f"{self.schedule!r}")
        return self

    def budget_settings(self) -> dict[str, Any]:
        """The Budget keyword arguments this calibration sets (steps aside)."""
        return {name: value for name, value in (("lr", self.lr), ("schedule", self.schedule),
                                                ("warmup", self.warmup)) if value is not None}


UNCALIBRATED = SuiteTraining()  # a suite whose budget nobody measured: 100 steps, default rate


@dataclass(frozen=True)
class Suite:
    name: str
    entries: tuple[SuiteEntry, ...]
    difficulty: str = "medium"
    seed: int = 0
    description: str | None = None
    training: SuiteTraining = UNCALIBRATED

    def __post_init__(self) -> None:
        object.__setattr__(self, "entries", tuple(self.entries))
        if not self.entries:
            raise SuiteError("tasks: a suite needs at least one task")
        if self.difficulty not in DIFFICULTIES:
            raise SuiteError(f"difficulty: {self.difficulty!r} is not one of "
                             f"{', '.join(DIFFICULTIES)}")
        names = set()
        for index, entry in enumerate(self.entries):
            if not entry.weight > 0 or not math.isfinite(entry.weight):
                raise SuiteError(f"tasks[{index}].weight: must be positive, got {entry.weight}")
            if entry.name in names:
                raise SuiteError(f"tasks[{index}].name: {entry.name!r} is used twice; give "
                                 f"each task of a suite its own name")
            names.add(entry.name)

    # -- use -------------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[SuiteEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def entry(self, name: str) -> SuiteEntry:
        for entry in self.entries:
            if entry.name == name:
                return entry
        raise KeyError(f"suite {self.name!r} has no task {name!r}; it has "
                       f"{', '.join(e.name for e in self.entries)}")

    def data(self, name: str, *, cache: bool = True) -> tuple[TaskData, TaskData]:
        """The train and test sets of the task called `name` (cached on disk by default)."""
        entry = self.entry(name)
        return load_splits(entry.task, entry.n_train, entry.n_test, self.seed, cache=cache)

    def quality(self, metrics: Mapping[str, Mapping[str, float]]) -> float:
        """Weighted mean test accuracy; `metrics[name]` is `score(...)` of that task."""
        total = sum(entry.weight for entry in self.entries)
        return sum(entry.weight * self._metrics(metrics, entry)["accuracy"]
                   for entry in self.entries) / total

    def summary(self, metrics: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        """`quality` plus `<name>/accuracy`, `<name>/loss` and, for byte LM, `<name>/bpb`."""
        flat = {"quality": self.quality(metrics)}
        for entry in self.entries:
            task_metrics = self._metrics(metrics, entry)
            for key in ("accuracy", "loss", "bpb"):
                if key in task_metrics:
                    flat[f"{entry.name}/{key}"] = float(task_metrics[key])
        return flat

    @staticmethod
    def _metrics(metrics: Mapping[str, Mapping[str, float]], entry: SuiteEntry):
        if entry.name not in metrics:
            raise KeyError(f"no metrics for task {entry.name!r}")
        return metrics[entry.name]

    # -- serialisation ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = {"name": self.name, "description": self.description,
                "difficulty": self.difficulty, "seed": self.seed,
                "tasks": [entry.to_dict() for entry in self.entries]}
        if self.training != UNCALIBRATED:
            data["training"] = dataclasses.asdict(self.training)
        return data

    def fingerprint(self) -> str:
        """Of the tasks and their data only: a changed calibration is not a different suite."""
        data = {key: value for key, value in self.to_dict().items() if key != "training"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any, source: str = "suite") -> Suite:
        if not isinstance(data, dict):
            raise SuiteError(f"{source}: a suite must be a mapping with a 'tasks' key")
        try:
            model = _SuiteModel.model_validate(data)
        except ValidationError as error:
            raise SuiteError(f"{source}: {_describe(error)}") from None
        entries = []
        for index, raw in enumerate(model.tasks):
            where = f"tasks[{index}]"
            try:
                task = _build_task(raw.task, raw.settings, where)
                entries.append(SuiteEntry(task, raw.weight, raw.n_train, raw.n_test, raw.name))
            except SuiteError as error:
                raise SuiteError(f"{source}: {error}") from None
        try:
            training = UNCALIBRATED if model.training is None else SuiteTraining(
                **model.training.model_dump()).with_known_schedule()
            return cls(model.name, tuple(entries), model.difficulty, model.seed, model.description,
                       training)
        except SuiteError as error:
            raise SuiteError(f"{source}: {error}") from None

    @classmethod
    def from_yaml(cls, text: str, source: str = "suite") -> Suite:
        return cls.from_dict(load_yaml(text, source, SuiteError), source)

    @classmethod
    def from_file(cls, path: str | Path) -> Suite:
        return cls.from_yaml(read_text(path, SuiteError), str(path))


# -- YAML validation ----------------------------------------------------------------------------

class _EntryModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    task: str
    name: str | None = None
    weight: float = Field(1.0, gt=0, allow_inf_nan=False)
    n_train: int = Field(DEFAULT_N_TRAIN, ge=1)
    n_test: int = Field(DEFAULT_N_TEST, ge=1)
    settings: dict[str, Any] = Field(default_factory=dict)


class _TrainingModel(BaseModel):  # keys and types; SuiteTraining checks the values
    model_config = ConfigDict(extra="forbid", strict=True)
    steps: int = UNCALIBRATED.steps
    lr: float | None = None
    schedule: str | None = None
    warmup: float | None = None


class _SuiteModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    description: str | None = None
    difficulty: Literal["easy", "medium", "hard"] = "medium"
    seed: int = Field(0, ge=0)
    tasks: list[_EntryModel] = Field(min_length=1)
    training: _TrainingModel | None = None


def _location(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    loc = tuple(part for part in first["loc"] if part not in ("str", "int", "float", "none"))
    if first["type"] == "extra_forbidden":
        model = {"tasks": _EntryModel, "training": _TrainingModel}.get(loc[0], _SuiteModel)
        return f"{_location(loc)}: unknown key (valid: {', '.join(model.model_fields)})"
    value = first.get("input")
    shown = "" if first["type"] == "missing" else f", got {value!r}"
    return f"{_location(loc)}: {first['msg'].lower()}{shown}"


@functools.cache
def _settings_model(cls: type) -> type[BaseModel]:
    hints = get_type_hints(cls)
    fields = {field.name: (hints[field.name], field.default)
              for field in dataclasses.fields(cls)}
    return create_model(f"{cls.__name__}Settings",
                        __config__=ConfigDict(extra="forbid", strict=True), **fields)


def _build_task(kind: str, settings: dict[str, Any], where: str) -> Task:
    if kind not in TASKS:
        raise SuiteError(f"{where}.task: unknown task {kind!r} (valid: {', '.join(TASKS)})")
    cls = TASKS[kind]
    valid = [field.name for field in dataclasses.fields(cls)]
    unknown = [key for key in settings if key not in valid]
    if unknown:
        raise SuiteError(f"{where}.settings.{unknown[0]}: unknown setting of {kind} "
                         f"(valid: {', '.join(valid)})")
    try:
        checked = _settings_model(cls).model_validate(settings)
    except ValidationError as error:
        raise SuiteError(f"{where}.settings.{_describe(error)}") from None
    try:
        return cls(**{key: getattr(checked, key) for key in settings})
    except TaskError as error:
        raise SuiteError(f"{where}.settings.{error}") from None


# -- presets ------------------------------------------------------------------------------------

def quick_suite() -> Suite:
    # MQAR gets 16384 training examples: each has only 4 scored positions, and at 1024 a 2-layer
    # attention model memorised the training set (test loss rising from step 400, accuracy ~0.3)
    # instead of learning the recall; 16384 take about 19 MB and 0.3 s to generate.
    return Suite("quick", (
        SuiteEntry(MQAR(seq_len=64, num_kv_pairs=4, vocab_size=64), n_train=16384),
        SuiteEntry(InContextRecall(seq_len=64), name="in_context_recall_64"),
    ), difficulty="easy", description="seconds per candidate on a CPU")


def mad_suite() -> Suite:
    tasks = (InContextRecall(), NoisyRecall(), FuzzyRecall(), SelectiveCopying(), Compression(),
             Memorization())
    return Suite("mad", tuple(SuiteEntry(task, n_train=4096, n_test=512) for task in tasks),
                 difficulty="medium", description="the MAD suite at its baseline settings")


def mqar_suite() -> Suite:
    return Suite("mqar", tuple(SuiteEntry(MQAR.preset(level), n_train=4096, n_test=512)
                               for level in range(1, 5)),
                 difficulty="hard", description="MQAR at the four Zoology difficulties")


def lm_suite() -> Suite:
    return Suite("lm", (SuiteEntry(ByteLM(), n_train=4096, n_test=512),), difficulty="medium",
                 description="byte-level LM on the Python standard library")


CAPACITY_MQAR = MQAR(seq_len=256, num_kv_pairs=32, vocab_size=256)


def capacity_suite() -> Suite:
    """MQAR 256x32 (vocabulary 256: 128 keys, 128 values), 32768 training examples.

    Why these sizes: `quick`'s MQAR 64x4 fits every recurrent state, so every architecture
    solves it given enough steps and the long-budget reference stops ranking them (its seeds
    disagreed, Spearman 0.52-0.69). Recall of K pairs needs a state of order K * d_model
    values. At the presets' width (d_model 64) a Mamba layer's state is 2 * 64 * 16 = 2048
    values, an RG-LRU layer's 64 and a Mamba-2 layer's 8192, while 32 pairs of 64-wide keys
    and values are 32 * 128 = 4096 values: the single-state mixers cannot hold them, attention
    (KV cache 2 * 256 * 64 per layer) can, and a hybrid gets there through its attention
    layers. 256 tokens keep a 200-step candidate near two minutes on one CPU core
    (benchmarks/README.md, "capacity suite"). 32768 examples are about eight epochs' worth at
    the 8x reference budget (1600 steps of 32) rather than the hundreds that let a model
    memorise a small training set instead of learning the recall (see `quick_suite`).

    Too hard for a short CPU budget: after 200 steps (and griffin, hawk and mamba after 400)
    every preset is still at chance on it (benchmarks/README.md, "Calibrating the fidelity
    suite"), so its 1x score ranks noise; on a CPU use `recall64`, its calibrated smaller form.
    """
    return Suite("capacity", (SuiteEntry(CAPACITY_MQAR, n_train=32768, n_test=512),),
                 difficulty="hard",
                 description="MQAR 256x32: more pairs than small recurrent states hold")


def recall64_suite() -> Suite:
    """MQAR 64x8 (vocabulary 64: 32 keys, 32 values), 32768 training and 1024 test examples:
    the capacity-bound suite calibrated for a CPU.

    Why these sizes (benchmarks/README.md, "Calibrating the fidelity suite"): it is the first
    MQAR size at which every preset at d_model 64 leaves chance within a few hundred steps on
    one CPU core (at 256x32, `capacity`, all eight were still at chance after 200 steps), and
    still capacity-bound in practice: after 1600 steps the attention-free presets stay at
    0.10-0.33 while hybrids with attention reach 0.35-1.0. 1024 test examples (8192 scored
    positions) keep the score's sampling noise near 0.005 at the accuracies a short budget
    reaches. The same task as benchmarks/suites/recall64.yaml, which the fidelity runs used.
    """
    return Suite("recall64", (SuiteEntry(MQAR(seq_len=64, num_kv_pairs=8, vocab_size=64),
                                         n_train=32768, n_test=1024),),
                 difficulty="medium",
                 description="MQAR 64x8: capacity-bound recall that a CPU trains in minutes",
                 training=RECALL64_TRAINING)


# The budget recall64's fidelity was measured at (benchmarks/README.md, "Fidelity on recall64";
# on a CPU at d_model 64, 14 architectures, 3 seeds, against the mean of three 1600-step runs):
# 600 steps at peak rate 3e-3, held constant after a 160-step warm-up, ranked the architectures
# at Spearman 0.851, 0.846 and 0.855; the same 600 steps with a cosine decay at 0.741-0.868 and
# 200 steps at 0.55-0.75. A decay before the late phase transitions halts them (free-2 reached
# 0.69 at the constant rate, 0.19-0.21 decayed). No budget on `quick` has been shown to rank
# reproducibly (its own 1600-step runs disagree across seeds, 0.52-0.69): it stays uncalibrated.
RECALL64_TRAINING = SuiteTraining(steps=600, lr=3e-3, schedule="constant", warmup=160 / 600)


PRESETS: dict[str, Callable[[], Suite]] = {
    "quick": quick_suite, "mad": mad_suite, "mqar": mqar_suite, "lm": lm_suite,
    "capacity": capacity_suite, "recall64": recall64_suite}


def load_suite(name_or_path: str | Path) -> Suite:
    """A preset by name, or a suite YAML file."""
    if isinstance(name_or_path, str) and name_or_path in PRESETS:
        return PRESETS[name_or_path]()
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or is_file(path):
        return Suite.from_file(path)
    raise SuiteError(f"{shorten(str(name_or_path))}: not a suite preset ({', '.join(PRESETS)}) "
                     f"nor a YAML file")
