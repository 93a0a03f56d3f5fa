"""The `constraints:` section of a search space, and how a candidate is measured against it.

    constraints:
      max_params: 5M                  # K/M/G = 1e3/1e6/1e9, KiB/MiB/GiB = 2^10/2^20/2^30
      max_active_params: 2M
      max_cache_bytes: {limit: 64MiB, context: 131072, dtype: bf16}   # state_dtype: fp32 too
      attention_ratio: [0.05, 0.25]   # share of layers that are A, L or S
      depth: [8, 32]                  # number of layers

Each constraint gives one number per candidate, Optuna's convention: <= 0 is satisfied, > 0 is
violated by that much (relative excess for the limits, absolute distance for the bounds), so
constrained samplers (NSGA-II, TPE, GP) can steer toward the feasible region.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from search_spaces.arch import ArchConfig
from search_spaces.layers import ATTENTION_MIXERS

_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGT]i?B?|B)?\s*$")
_SCALE = {None: 1, "B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
          "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def parse_quantity(value: Any) -> int:
    """`5M`, `1.5e6`, `64MiB` or a plain number, as an integer."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number like 5M or 64MiB, got {value!r}")
    if isinstance(value, (int, float)):
        number = value
    elif isinstance(value, str) and (match := _QUANTITY.match(value)):
        number = float(match.group(1)) * _SCALE[match.group(2)]
    else:
        raise ValueError(f"expected a number like 5M or 64MiB, got {value!r}")
    if number <= 0:
        raise ValueError(f"expected a positive amount, got {value!r}")
    return int(round(number))


def _bounds(value: Any) -> tuple[float, float]:
    if isinstance(value, dict):
        unknown = set(value) - {"min", "max"}
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} (expected min, max)")
        value = [value.get("min"), value.get("max")]
    if not (isinstance(value, (list, tuple)) and len(value) == 2):
        raise ValueError(f"expected [min, max] or {{min: .., max: ..}}, got {value!r}")
    low, high = value
    if low is not None and high is not None and high < low:
        raise ValueError(f"empty range [{low}, {high}]")
    return (float("-inf") if low is None else low, float("inf") if high is None else high)


class CacheLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    limit: int
    context: int
    dtype: str = "bf16"
    state_dtype: str | None = None  # recurrent states' dtype, if not `dtype`

    @field_validator("limit", "context", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> int:
        return parse_quantity(value)

    @field_validator("dtype", "state_dtype")
    @classmethod
    def _dtype(cls, value: str | None) -> str | None:
        from search_spaces.cost import DTYPE_BYTES

        if value is not None and value not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {value!r} (valid: {', '.join(DTYPE_BYTES)})")
        return value


class Constraints(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_params: int | None = None
    max_active_params: int | None = None
    max_cache_bytes: CacheLimit | None = None
    attention_ratio: tuple[float, float] | None = None
    depth: tuple[float, float] | None = None

    @field_validator("max_params", "max_active_params", mode="before")
    @classmethod
    def _quantity(cls, value: Any) -> int | None:
        return None if value is None else parse_quantity(value)

    @field_validator("attention_ratio", "depth", mode="before")
    @classmethod
    def _range(cls, value: Any) -> tuple[float, float] | None:
        return None if value is None else _bounds(value)

    @model_validator(mode="after")
    def _ratio_in_unit_interval(self) -> "Constraints":
        if self.attention_ratio is not None:
            low, high = self.attention_ratio
            if high < 0 or low > 1:
                raise ValueError("attention_ratio: bounds must overlap [0, 1]")
        return self

    def names(self) -> tuple[str, ...]:
        return tuple(name for name in type(self).model_fields if getattr(self, name) is not None)

    def evaluate(self, arch: ArchConfig) -> dict[str, float]:
        """One value per constraint: <= 0 satisfied, > 0 the amount of the violation."""
        from search_spaces.cost import estimate

        values: dict[str, float] = {}
        if self.max_params is not None or self.max_active_params is not None:
            report = estimate(arch, context=1)
            if self.max_params is not None:
                values["max_params"] = report.params / self.max_params - 1.0
            if self.max_active_params is not None:
                values["max_active_params"] = report.active_params / self.max_active_params - 1.0
        if self.max_cache_bytes is not None:
            limit = self.max_cache_bytes
            report = estimate(arch, context=limit.context, dtype=limit.dtype,
                              state_dtype=limit.state_dtype)
            values["max_cache_bytes"] = report.cache_bytes / limit.limit - 1.0
        if self.attention_ratio is not None:
            ratio = attention_ratio(arch)
            low, high = self.attention_ratio
            values["attention_ratio"] = max(low - ratio, ratio - high)
        if self.depth is not None:
            low, high = self.depth
            values["depth"] = float(max(low - arch.depth, arch.depth - high))
        return values

    def to_yaml(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name in self.names():
            value = getattr(self, name)
            if isinstance(value, CacheLimit):
                value = value.model_dump(exclude_none=True)
            elif isinstance(value, tuple):
                value = [None if abs(v) == float("inf") else v for v in value]
            data[name] = value
        return data


def attention_ratio(arch: ArchConfig) -> float:
    return sum(layer.mixer in ATTENTION_MIXERS for layer in arch.layers) / arch.depth
