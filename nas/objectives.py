"""The objectives a study optimises, parsed from `quality,cache@131072,params`.

Each objective has a direction and says where its value comes from: the analytic cost model
(known before training, so an untrained candidate still has it), or the trained result.

    quality             weighted mean test accuracy of the suite     maximize  trained
    loss                weighted mean test loss of the suite         minimize  trained
    params              parameters                                   minimize  analytic
    active_params       parameters one token uses (MoE: top-k)       minimize  analytic
    flops@N             forward FLOPs per token at context N         minimize  analytic
    cache@N             inference cache bytes (bf16) at context N    minimize  analytic
    train_tokens_per_s  measured training throughput                 maximize  trained
    decode_ms@N         measured decode latency per token at N       minimize  trained
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from nas.record import LOSS, QUALITY, TrainedResult

MAXIMIZE, MINIMIZE = "maximize", "minimize"
CACHE_DTYPE = "bf16"

# name -> (direction, takes a context, measured by training)
KINDS: dict[str, tuple[str, bool, bool]] = {
    QUALITY: (MAXIMIZE, False, True),  # the objectives named after a recorded result
    LOSS: (MINIMIZE, False, True),
    "params": (MINIMIZE, False, False),
    "active_params": (MINIMIZE, False, False),
    "flops": (MINIMIZE, True, False),
    "cache": (MINIMIZE, True, False),
    "train_tokens_per_s": (MAXIMIZE, False, True),
    "decode_ms": (MINIMIZE, True, True),
}
# The `trials.TrialResult.measured` entry of each measured objective.
MEASURED_BY_KIND = {"train_tokens_per_s": "train_tokens_per_s",
                    "decode_ms": "decode_ms_per_token"}
VALID = (QUALITY, LOSS, "params", "active_params", "flops@N", "cache@N",
         "train_tokens_per_s", "decode_ms@N")
_SUFFIXES = {"k": 1_000, "m": 1_000_000, "ki": 1024, "mi": 1024**2}


class ObjectiveError(ValueError):
    """An objective list that cannot be used; the message names the entry."""


@dataclass(frozen=True)
class Objective:
    kind: str
    context: int | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}@{self.context}" if self.context is not None else self.kind

    @property
    def direction(self) -> str:
        return KINDS[self.kind][0]

    @property
    def measured(self) -> bool:
        """Needs a trained model (an untrained candidate has no value for it)."""
        return KINDS[self.kind][2]

    def value(self, analytic: Mapping[str, Any], result: TrainedResult) -> float:
        """This objective's value from `analytic_costs(arch, ...)` and a trial's trained result
        (whose `loss` is the suite-weighted mean of the task losses)."""
        if not self.measured:
            return float(analytic[self.name])
        if self.kind == QUALITY:
            return float(result.quality)
        if self.kind == LOSS:
            return math.nan if result.loss is None else float(result.loss)
        return float(result.measured[MEASURED_BY_KIND[self.kind]])


def parse_objectives(text: str | list[str]) -> tuple[Objective, ...]:
    """`"quality,cache@128k"` -> objectives; ObjectiveError naming a bad entry."""
    entries = text.split(",") if isinstance(text, str) else list(text)
    objectives: list[Objective] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            raise ObjectiveError(f"objectives: empty entry in {text!r}")
        kind, _, context_text = entry.partition("@")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise ObjectiveError(f"objective {entry!r}: unknown (valid: {', '.join(VALID)})")
        wants_context = KINDS[kind][1]
        if wants_context and not context_text:
            raise ObjectiveError(f"objective {entry!r}: give a context length, as in "
                                 f"{kind}@131072")
        if context_text and not wants_context:
            raise ObjectiveError(f"objective {entry!r}: {kind} takes no @context")
        context = _parse_context(entry, context_text) if context_text else None
        objective = Objective(kind, context)
        if objective in objectives:
            raise ObjectiveError(f"objective {entry!r}: listed twice")
        objectives.append(objective)
    if not objectives:
        raise ObjectiveError("objectives: give at least one (valid: " + ", ".join(VALID) + ")")
    decode = {o.context for o in objectives if o.kind == "decode_ms"}
    if len(decode) > 1:
        raise ObjectiveError("objectives: decode latency is measured at one context per study; "
                             f"got decode_ms@{' and decode_ms@'.join(map(str, sorted(decode)))}")
    return tuple(objectives)


def _parse_context(entry: str, text: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s*([kKmM][iI]?)?\s*", text)
    if not match:
        raise ObjectiveError(f"objective {entry!r}: context {text!r} is not a whole number")
    value = int(match.group(1)) * _SUFFIXES.get((match.group(2) or "").lower(), 1)
    if value < 1:
        raise ObjectiveError(f"objective {entry!r}: context must be at least 1")
    return value


def format_objectives(objectives: tuple[Objective, ...]) -> str:
    return ",".join(objective.name for objective in objectives)


def analytic_costs(arch: Any, objectives: tuple[Objective, ...]) -> dict[str, float]:
    """Cost-model values for every analytic objective (and params/active_params always)."""
    from search_spaces.cost import estimate

    contexts = {o.context for o in objectives if o.kind in ("flops", "cache")}
    reports = {context: estimate(arch, context=context, dtype=CACHE_DTYPE)
               for context in contexts}  # one estimate per context, whichever asks for it
    base = next(iter(reports.values()), None) or estimate(arch, context=1, dtype=CACHE_DTYPE)
    costs: dict[str, float] = {"params": base.params, "active_params": base.active_params}
    for context, report in reports.items():
        costs[f"flops@{context}"] = report.flops_per_token
        costs[f"cache@{context}"] = report.cache_bytes
    return costs


def decode_context(objectives: tuple[Objective, ...]) -> int | None:
    """The context at which decoding must be timed, when an objective asks for it."""
    for objective in objectives:
        if objective.kind == "decode_ms":
            return objective.context
    return None
