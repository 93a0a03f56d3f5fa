"""The `dims:` section of a search space: one spec per width, fixed or searchable.

    d_model: 128                          fixed (not an Optuna parameter)
    d_model: [64, 128, 256]               categorical
    d_state: {int: [8, 32], step: 8}      integer range (optional step, log)
    rope_theta: {float: [1e3, 1e6], log: true}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from search_spaces.arch import PATTERN_DIMS, ArchConfig, field_names
from search_spaces.errors import UserError
from search_spaces.layers import ACTIVATIONS, FFNS

BOOL_DIMS = ArchConfig.BOOL_FIELDS
FLOAT_DIMS = ("norm_eps", "rope_theta", "rope_fraction")
AUTO_DIMS = ("n_kv_heads", "d_ff", "dt_rank", "lru_width")  # null = derived by default
#: Dims whose values are words, and the words each accepts.
STR_DIMS: dict[str, tuple[str, tuple[str, ...]]] = {"ffn": ("an FFN kind", FFNS),
                                                    "ffn_act": ("an activation", ACTIVATIONS)}
MAX_INT = 2**31 - 1  # no width or count is larger; Optuna stores parameters as doubles
MAX_FLOAT_STEPS = 1_000_000  # values of a stepped float range


class SpaceError(UserError):
    """A search space file or spec that cannot be used; the message names the key."""


def dim_names() -> tuple[str, ...]:
    return PATTERN_DIMS + field_names()


def check_value(name: str, value: Any) -> Any:
    """The value if it is valid for this dim, else a SpaceError naming it."""
    where = f"dims.{name}"
    if name in STR_DIMS:
        what, words = STR_DIMS[name]
        if value not in words:
            raise SpaceError(f"{where}: {value!r} is not {what} ({', '.join(words)})")
        return value
    if name in BOOL_DIMS:
        if not isinstance(value, bool):
            raise SpaceError(f"{where}: expected true or false, got {value!r}")
        return value
    if name in FLOAT_DIMS:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SpaceError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if value is None and name in AUTO_DIMS:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        auto = " (or null for the default)" if name in AUTO_DIMS else ""
        raise SpaceError(f"{where}: expected a positive integer{auto}, got {value!r}")
    if value > MAX_INT:
        raise SpaceError(f"{where}: {value:,} is larger than {MAX_INT:,}")
    return value


@dataclass(frozen=True)
class FixedDim:
    name: str
    value: Any

    def suggest(self, trial: Any) -> Any:
        return self.value

    def values(self) -> tuple[Any, ...]:
        return (self.value,)

    @property
    def searchable(self) -> bool:
        return False

    def describe(self) -> str:
        return f"fixed {self.value!r}"

    def to_yaml(self) -> Any:
        return self.value


@dataclass(frozen=True)
class CategoricalDim:
    name: str
    choices: tuple[Any, ...]

    def suggest(self, trial: Any) -> Any:
        return trial.suggest_categorical(self.name, list(self.choices))

    def values(self) -> tuple[Any, ...]:
        return self.choices

    @property
    def searchable(self) -> bool:
        return True

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.choices))

    def to_yaml(self) -> Any:
        return list(self.choices)


@dataclass(frozen=True)
class IntDim:
    name: str
    low: int
    high: int
    step: int = 1
    log: bool = False

    def suggest(self, trial: Any) -> Any:
        return trial.suggest_int(self.name, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> range:
        """A range, not a list: a wide range costs nothing until it is enumerated."""
        return range(self.low, self.high + 1, self.step)

    @property
    def searchable(self) -> bool:
        return True

    def describe(self) -> str:
        step = f" step {self.step}" if self.step != 1 else ""
        return f"int {self.low}..{self.high}{step}{' log' if self.log else ''}"

    def to_yaml(self) -> Any:
        spec: dict[str, Any] = {"int": [self.low, self.high]}
        if self.step != 1:
            spec["step"] = self.step
        if self.log:
            spec["log"] = True
        return spec


@dataclass(frozen=True)
class FloatDim:
    name: str
    low: float
    high: float
    step: float | None = None
    log: bool = False

    def suggest(self, trial: Any) -> Any:
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def values(self) -> tuple[float, ...] | None:
        """None: a continuous range has no finite list of values."""
        if self.step is None:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return tuple(self.low + i * self.step for i in range(count))

    @property
    def searchable(self) -> bool:
        return True

    def describe(self) -> str:
        step = f" step {self.step}" if self.step is not None else ""
        return f"float {self.low}..{self.high}{step}{' log' if self.log else ''}"

    def to_yaml(self) -> Any:
        spec: dict[str, Any] = {"float": [self.low, self.high]}
        if self.step is not None:
            spec["step"] = self.step
        if self.log:
            spec["log"] = True
        return spec


DimSpec = FixedDim | CategoricalDim | IntDim | FloatDim


def parse_dim(name: str, raw: Any) -> DimSpec:
    where = f"dims.{name}"
    if name not in dim_names():
        import difflib

        close = difflib.get_close_matches(name, dim_names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpaceError(f"{where}: unknown dim{hint}; valid dims: {', '.join(dim_names())}")
    if isinstance(raw, list):
        if not raw:
            raise SpaceError(f"{where}: an empty list leaves nothing to choose")
        values = tuple(check_value(name, v) for v in raw)
        if len(set(map(repr, values))) != len(values):
            raise SpaceError(f"{where}: the list {raw!r} repeats a value")
        return CategoricalDim(name, values) if len(values) > 1 else FixedDim(name, values[0])
    if isinstance(raw, dict):
        return _parse_range(name, raw)
    return FixedDim(name, check_value(name, raw))


def _parse_range(name: str, raw: dict) -> DimSpec:
    where = f"dims.{name}"
    kinds = [k for k in ("int", "float") if k in raw]
    unknown = sorted(set(raw) - {"int", "float", "step", "log"}, key=str)
    if unknown:
        raise SpaceError(f"{where}: unknown key {unknown[0]!r} (expected int or float, step, log)")
    if len(kinds) != 1:
        raise SpaceError(f"{where}: a range needs exactly one of 'int: [lo, hi]' or "
                         "'float: [lo, hi]'")
    kind = kinds[0]
    bounds = raw[kind]
    if not (isinstance(bounds, list) and len(bounds) == 2):
        raise SpaceError(f"{where}.{kind}: expected [low, high], got {bounds!r}")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}.log: expected true or false, got {log!r}")
    step = raw.get("step")
    if kind == "int":
        if name in FLOAT_DIMS + BOOL_DIMS + tuple(STR_DIMS):
            raise SpaceError(f"{where}: an integer range does not fit this dim")
        low, high = (check_value(name, b) for b in bounds)
        if low is None or high is None:
            raise SpaceError(f"{where}.int: bounds must be integers, got {bounds!r}")
        step = 1 if step is None else step
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise SpaceError(f"{where}.step: expected a positive integer, got {step!r}")
        if log and step != 1:
            raise SpaceError(f"{where}: log and step cannot be combined (Optuna refuses it)")
        if high < low:
            raise SpaceError(f"{where}.int: empty range {low}..{high}")
        return IntDim(name, low, high, step, log)
    if name not in FLOAT_DIMS:
        raise SpaceError(f"{where}: a float range only fits {', '.join(FLOAT_DIMS)}")
    low, high = (check_value(name, b) for b in bounds)
    if high < low:
        raise SpaceError(f"{where}.float: empty range {low}..{high}")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))
                             or step <= 0):
        raise SpaceError(f"{where}.step: expected a positive number, got {step!r}")
    if step is not None and (high - low) / step >= MAX_FLOAT_STEPS:
        raise SpaceError(f"{where}.step: {step!r} makes more than {MAX_FLOAT_STEPS:,} values "
                         f"between {low:g} and {high:g}")
    if log and (step is not None or low <= 0):
        raise SpaceError(f"{where}: a log range needs low > 0 and no step")
    return FloatDim(name, low, high, None if step is None else float(step), log)
