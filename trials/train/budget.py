"""How much training one candidate gets, and the optimiser schedule that goes with it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

from search_spaces.errors import UserError

# Learning-rate schedules: "cosine" lays warm-up and a cosine decay over the planned steps, so
# its every step depends on the final budget; "wsd" (warm-up, stable, decay) holds the peak
# rate until a short decay at the end of its own steps, so that a run to N steps and a longer
# run agree on every step before N's decay: successive halving continues a promoted candidate
# from the checkpoint taken where its decay began (nas.continuation); "constant" holds the peak
# rate to the end, so that the score is read before any annealing (the fidelity runs compare
# it with the decayed schedules: benchmarks/README.md).
SCHEDULES = ("cosine", "wsd", "constant")
# Settings added after budgets were first stored: written only when not at their default, so
# the stored budgets (and results) of earlier studies read and compare unchanged.
OPTIONAL_DEFAULTS = {"schedule": "cosine", "decay": 0.2, "warmup_steps": None}

# Peak learning rate by default. On `quick` at 200 steps, 1e-3 separated the attention presets
# from the attention-free ones far more clearly than 3e-3, the earlier default (mean recall gap
# +0.19 against +0.06): jamba and zamba learned in-context recall within 200 steps at 1e-3 and
# not at 3e-3. benchmarks/README.md has the runs.
DEFAULT_LR = 1e-3


class BudgetError(UserError):
    """A budget setting that cannot work; the message names the field."""


@dataclass(frozen=True)
class Budget:
    """Training budget and optimiser settings for one candidate on one task.

    Training stops at `steps` optimiser steps or after `seconds` of wall time, whichever comes
    first (at least one must be set). The learning rate warms up linearly for `warmup` of the
    planned steps (or `warmup_steps`), then follows `schedule`: "cosine" decays to
    `min_lr_ratio * lr` over the rest; "wsd" holds the peak rate and decays over the last
    `decay` of the planned steps only (`decay_start`); "constant" holds the peak rate.

    `lr` is one peak rate, or several: a sweep, where every task is trained once at each rate
    and scored at its best (MAD's protocol), at that many times the cost. Architectures differ
    in the rate they train best at, so one fixed rate partly measures the rate.
    """

    steps: int | None = 200
    seconds: float | None = None
    batch_size: int = 32
    lr: float | tuple[float, ...] = DEFAULT_LR
    weight_decay: float = 0.1
    warmup: float = 0.1  # fraction of `steps`
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    aux_loss_weight: float = 0.01  # MoE load balancing
    eval_every: int | None = None  # steps between learning-curve points; default: 5 points
    eval_batches: int | None = None  # cap on test batches per learning-curve point
    decode_context: int = 128  # context at which decoding latency is measured (0: skip)
    schedule: str = "cosine"  # one of SCHEDULES
    # wsd: fraction of the planned steps spent decaying. 0.2: with 10-20% the decayed runs of
    # Hägele et al. (2024) matched cosine runs of the same length; at the tiny first rungs of a
    # CPU study (20 steps) 10% would be two steps, too few to settle, so the upper end.
    decay: float = 0.2
    warmup_steps: int | None = None  # overrides `warmup`: a warm-up every rung shares

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None:
            raise BudgetError("budget: give steps, seconds or both")
        for name in ("steps", "batch_size", "eval_every", "eval_batches", "warmup_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise BudgetError(f"{name}: expected a positive integer, got {value!r}")
        self._check_rates()
        for name in ("seconds", "grad_clip"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0
                                          and math.isfinite(value)):
                raise BudgetError(f"{name}: expected a positive number, got {value!r}")
        for name in ("weight_decay", "aux_loss_weight"):
            if not getattr(self, name) >= 0:
                raise BudgetError(f"{name}: expected a number >= 0, got {getattr(self, name)!r}")
        if self.schedule not in SCHEDULES:
            raise BudgetError(f"schedule: expected one of {', '.join(SCHEDULES)}, got "
                              f"{self.schedule!r}")
        if not 0 < self.decay <= 1:
            raise BudgetError(f"decay: expected a number in (0, 1], got {self.decay!r}")
        for name in ("warmup", "min_lr_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise BudgetError(f"{name}: expected a number in [0, 1], got "
                                  f"{getattr(self, name)!r}")
        if self.decode_context < 0:
            raise BudgetError(f"decode_context: expected >= 0, got {self.decode_context!r}")

    def _check_rates(self) -> None:
        rates = self.lr
        if isinstance(rates, (list, tuple)):
            if not rates:
                raise BudgetError("lr: give at least one learning rate")
            # JSON (stored studies) gives a list back; the frozen budget keeps a tuple, and a
            # sweep of one rate is that rate (so the same budget is always stored the same way).
            rates = tuple(rates) if len(rates) > 1 else rates[0]
            object.__setattr__(self, "lr", rates)
        for rate in rates if isinstance(rates, tuple) else (rates,):
            if isinstance(rate, bool) or not (isinstance(rate, (int, float)) and rate > 0
                                              and math.isfinite(rate)):
                raise BudgetError(f"lr: expected a positive number, got {rate!r}")
        if isinstance(rates, tuple) and len(set(rates)) != len(rates):
            raise BudgetError(f"lr: the sweep {list(rates)} names a rate twice")

    @property
    def rates(self) -> tuple[float, ...]:
        """The peak learning rates each task is trained at (one unless `lr` is a sweep)."""
        return self.lr if isinstance(self.lr, tuple) else (self.lr,)

    def at_rate(self, rate: float) -> "Budget":
        """This budget with the single peak learning rate `rate` (one run of a sweep)."""
        return dataclasses.replace(self, lr=rate)

    @property
    def planned_steps(self) -> int:
        """Steps the schedule is laid out over (a time-only budget plans for 10k)."""
        return self.steps if self.steps is not None else 10_000

    @property
    def curve_every(self) -> int:
        """Steps between learning-curve points: five points by default, and under five planned
        steps one point at the end (each point scores the test set, which costs several
        training steps)."""
        planned = self.planned_steps
        return self.eval_every or (planned // 5 if planned >= 5 else planned)

    @property
    def warmup_length(self) -> int:
        return self.warmup_steps or max(1, round(self.warmup * self.planned_steps))

    @property
    def decay_start(self) -> int | None:
        """wsd: the step at which the decay begins, where a run is checkpointed so that a
        longer run can continue from it; None for a schedule with no such point."""
        if self.schedule != "wsd":
            return None
        total = self.planned_steps
        return max(self.warmup_length, total - max(1, round(self.decay * total)))

    def lr_factor(self, step: int) -> float:
        """Multiplier of `lr` at optimiser step `step` (0-based): warm-up, then the schedule."""
        total = self.planned_steps
        warm = self.warmup_length
        if step < warm:
            return (step + 1) / warm
        if self.schedule == "constant":
            return 1.0
        if self.schedule == "wsd":
            start = self.decay_start
            if step < start:
                return 1.0
            # 1 - sqrt: Hägele et al. (2024) found it ahead of a linear decay at equal length.
            progress = min(1.0, (step - start + 1) / max(1, total - start))
            return self.min_lr_ratio + (1 - self.min_lr_ratio) * (1 - math.sqrt(progress))
        progress = min(1.0, (step - warm) / max(1, total - warm))
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * cosine

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items()
                if key not in OPTIONAL_DEFAULTS or value != OPTIONAL_DEFAULTS[key]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Budget":
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise BudgetError(f"{unknown[0]}: unknown budget setting (valid: "
                              f"{', '.join(cls.__dataclass_fields__)})")
        return cls(**data)
