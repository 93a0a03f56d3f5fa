"""Multi-objective successive halving: the rungs and the promotion rule, as plain data.

A study with rungs trains every new candidate at the first rung's budget; a candidate measured
at rung r may be promoted to rung r+1 (trained at its budget) when it ranks in the top 1/eta of
the candidates measured at rung r so far. The decision is asynchronous (ASHA, Li et al. 2020;
its multi-objective form MO-ASHA, Schmucker et al. 2021): a free worker promotes a waiting
candidate when one qualifies and samples a new one otherwise, so no worker waits for a rung to
fill up.

    rung r:   candidates measured here, ranked        promoted: the top floor(n / eta)
              1. non-dominated sorting                 (those not promoted already)
              2. within a front, crowding distance     -> rung r+1, highest rung first

Ranking inside one front uses NSGA-II's crowding distance rather than each point's hypervolume
contribution. Crowding distance needs no reference point (a hypervolume does, and at a low rung
there is no principled one: the scores there are not the scores of the final budget), it is
invariant to each objective's scale (every side is divided by that objective's range on the
front), and it costs O(m n log n) for m objectives where exact hypervolume contributions grow
exponentially with m. It prefers the ends and the sparse parts of a front, which is what a
search for a front wants to spend its next budget on. Its weakness (several points with equal
distance) is broken by the order candidates arrived in, so a promotion is reproducible.

Nothing here imports optuna or torch: `nas.halving` reads the study and calls these functions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from search_spaces.errors import UserError

DEFAULT_ETA = 3


class RungError(UserError):
    """A rung specification that cannot be used; one line naming the option and the value."""


@dataclass(frozen=True)
class Rungs:
    """Budgets in training steps, strictly increasing; the last is the full budget. `eta`: the
    promotion factor (the top 1/eta of a rung is promoted)."""

    steps: tuple[int, ...]
    eta: int = DEFAULT_ETA

    def __post_init__(self) -> None:
        steps = tuple(self.steps)
        object.__setattr__(self, "steps", steps)
        if len(steps) < 2:
            raise RungError(f"rungs: give at least two budgets, got {_show(steps)}")
        for index, value in enumerate(steps):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RungError(f"rungs: budget {index} is {value!r}, expected a whole number "
                                "of steps >= 1")
            if index and value <= steps[index - 1]:
                raise RungError(f"rungs: budgets must increase, but budget {index} ({value}) "
                                f"is not above budget {index - 1} ({steps[index - 1]})")
        if isinstance(self.eta, bool) or not isinstance(self.eta, int) or self.eta < 2:
            raise RungError(f"eta: expected a whole number >= 2, got {self.eta!r}")

    @property
    def top(self) -> int:
        """Index of the last (full-budget) rung."""
        return len(self.steps) - 1

    @property
    def full_steps(self) -> int:
        return self.steps[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "sh", "rungs": list(self.steps), "eta": self.eta}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Rungs":
        if not isinstance(data, Mapping) or data.get("kind") != "sh":
            raise RungError(f"fidelity: expected {{'kind': 'sh', 'rungs': [...], 'eta': n}}, "
                            f"got {data!r}")
        rungs = data.get("rungs")
        if not isinstance(rungs, list):
            raise RungError(f"fidelity: 'rungs' must be a list of steps, got {rungs!r}")
        return cls(tuple(rungs), data.get("eta", DEFAULT_ETA))

    def describe(self) -> str:
        return f"successive halving, rungs {','.join(map(str, self.steps))} steps, eta {self.eta}"


def parse_rungs(rungs: str | None = None, *, min_steps: int | None = None,
                eta: int | None = None, max_steps: int | None = None) -> Rungs:
    """The rungs from `--rungs 100,300,900`, or from `--min-steps 100 --eta 3` up to
    `max_steps` (the full budget): max, max/eta, max/eta^2, ... down to no less than min_steps,
    so every ratio is eta and the last rung is the budget itself."""
    if eta is not None and (isinstance(eta, bool) or not isinstance(eta, int) or eta < 2):
        raise RungError(f"--eta {eta}: expected a whole number >= 2")
    factor = DEFAULT_ETA if eta is None else eta
    if rungs is not None:
        if min_steps is not None:
            raise RungError("--rungs and --min-steps: give one of them, not both")
        steps = []
        for index, part in enumerate(rungs.split(",")):
            text = part.strip()
            if not text.isdigit():
                raise RungError(f"--rungs {rungs!r}: entry {index} ({text!r}) is not a whole "
                                "number of steps")
            steps.append(int(text))
        if max_steps is not None and steps[-1] != max_steps:
            raise RungError(f"--rungs {rungs!r}: the last rung is the full budget, but "
                            f"--budget-steps is {max_steps}")
        try:
            return Rungs(tuple(steps), factor)
        except RungError as error:
            raise RungError(f"--rungs {rungs!r}: {str(error).removeprefix('rungs: ')}") from None
    if min_steps is None:
        raise RungError("--fidelity sh: give --rungs (such as 100,300,900) or --min-steps "
                        "(with --eta, default 3)")
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 1:
        raise RungError(f"--min-steps {min_steps}: expected a whole number >= 1")
    if max_steps is None or max_steps <= min_steps:
        raise RungError(f"--min-steps {min_steps}: must be below the full budget "
                        f"(--budget-steps {max_steps})")
    count = 1 + int(math.floor(math.log(max_steps / min_steps, factor) + 1e-9))
    steps = tuple(max(1, round(max_steps / factor**k)) for k in range(count - 1, -1, -1))
    if len(set(steps)) != len(steps) or len(steps) < 2:
        raise RungError(f"--min-steps {min_steps} --eta {factor}: gives fewer than two "
                        f"distinct rungs below --budget-steps {max_steps}")
    return Rungs(steps, factor)


def _show(steps: Sequence[Any]) -> str:
    return ",".join(map(str, steps)) or "none"


# -- ranking -------------------------------------------------------------------------------------

def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Every objective of `a` no worse than `b`'s and one better (all minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def nondominated_fronts(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """Indices of `points` by front (Deb's fast non-dominated sort); front 0 is the Pareto
    front. Every objective is minimised; equal points share a front."""
    n = len(points)
    dominated_by: list[list[int]] = [[] for _ in range(n)]  # i -> points that i dominates
    counts = [0] * n  # how many points dominate i
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominated_by[i].append(j)
                counts[j] += 1
            elif dominates(points[j], points[i]):
                dominated_by[j].append(i)
                counts[i] += 1
    fronts, current = [], [i for i in range(n) if counts[i] == 0]
    while current:
        fronts.append(current)
        following = []
        for i in current:
            for j in dominated_by[i]:
                counts[j] -= 1
                if counts[j] == 0:
                    following.append(j)
        current = sorted(following)
    return fronts


def crowding_distances(points: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II's crowding distance of each point of one front: the sum over objectives of the
    gap between its two neighbours, divided by the objective's range; the ends are infinite."""
    n = len(points)
    if n <= 2:
        return [math.inf] * n
    distance = [0.0] * n
    for axis in range(len(points[0])):
        order = sorted(range(n), key=lambda i: (points[i][axis], i))
        low, high = points[order[0]][axis], points[order[-1]][axis]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for position in range(1, n - 1):
            i = order[position]
            distance[i] += (points[order[position + 1]][axis]
                            - points[order[position - 1]][axis]) / (high - low)
    return distance


def promotion_order(points: Sequence[Sequence[float] | None]) -> list[int]:
    """Indices of `points`, best first: by non-dominated front, then by crowding distance
    within the front (larger first), then by index (earlier first). A point that is None (a
    candidate that failed at this rung) or has a non-finite value comes last."""
    usable = [i for i, p in enumerate(points)
              if p is not None and all(math.isfinite(v) for v in p)]
    unusable = [i for i in range(len(points)) if i not in set(usable)]
    order: list[int] = []
    for front in nondominated_fronts([points[i] for i in usable]):
        members = [usable[k] for k in front]
        crowd = crowding_distances([points[i] for i in members])
        ranked = sorted(range(len(members)), key=lambda k: (-crowd[k], members[k]))
        order.extend(members[k] for k in ranked)
    return order + unusable


def promotable(results: Mapping[int, Sequence[float] | None], promoted: set[int] | frozenset,
               eta: int) -> list[int]:
    """The candidates of one rung that qualify for the next, best first: in the top
    floor(n / eta) of the n measured at this rung (`results`: candidate -> its minimised
    objective values, or None if it failed), and not promoted yet."""
    ids = sorted(results)
    best = promotion_order([results[i] for i in ids])[:len(ids) // eta]
    return [ids[k] for k in best if ids[k] not in promoted and results[ids[k]] is not None]


def next_promotion(rungs: Rungs, results: Sequence[Mapping[int, Sequence[float] | None]],
                   promoted: Sequence[set[int] | frozenset]) -> tuple[int, int] | None:
    """(rung, candidate) to promote from rung to rung + 1, or None: sample a new candidate.
    `results[r]` and `promoted[r]` describe rung r. Higher rungs first (ASHA's order: the
    candidate that is furthest along gets the worker, so the full budget is reached early)."""
    for rung in range(rungs.top - 1, -1, -1):
        if rung >= len(results):
            continue
        waiting = promotable(results[rung], promoted[rung] if rung < len(promoted) else set(),
                             rungs.eta)
        if waiting:
            return rung, waiting[0]
    return None


def never_promoted(rungs: Rungs, results: Sequence[Mapping[int, Sequence[float] | None]],
                   promoted: Sequence[set[int] | frozenset], capacity: int) -> list[set[int]]:
    """For each rung below the top, the candidates measured there that no promotion will ever
    take to the next rung (their checkpoints can go: nas.continuation). `results` and
    `promoted` as for `next_promotion`; `capacity`: the most candidates the first rung will
    ever measure (the study's budget of new architectures).

    A rung's promotions are final once no candidate can still arrive there (`capacity` reached
    at the first rung; at a higher one, the rung below final and each of its promotions
    measured): then every candidate outside the top floor(n / eta) that is not promoted already
    is out. Before that, one rule holds whatever arrives: a candidate dominated by at least
    floor(m / eta) others, where m bounds the rung's final count, sits behind all of them in
    every later order (non-dominated sorting keeps a dominator in an earlier front), so it never
    enters the top floor(n / eta) for any n <= m. A failed candidate is never promoted."""
    out: list[set[int]] = []
    bound = capacity  # the most candidates this rung will ever measure
    for rung in range(rungs.top):
        measured = results[rung] if rung < len(results) else {}
        done = promoted[rung] if rung < len(promoted) else set()
        bound = max(bound, len(measured))
        ids = sorted(measured)
        if bound == len(measured):  # final: the top is the top for good
            order = promotion_order([measured[i] for i in ids])
            top = {ids[k] for k in order[:len(ids) // rungs.eta]}
            gone = {c for c in ids if c not in done
                    and (c not in top or measured[c] is None)}
        else:
            enough = bound // rungs.eta
            gone = {c for c in ids if c not in done
                    and (measured[c] is None or _dominators(c, measured, enough) >= enough)}
        out.append(gone)
        above = results[rung + 1] if rung + 1 < len(results) else {}
        bound = len(set(above) | (set(ids) - gone)) + (bound - len(measured))
    return out


def _dominators(candidate: int, measured: Mapping[int, Sequence[float] | None],
                enough: int) -> int:
    """How many of `measured` dominate `candidate`, counting no further than `enough`."""
    point, count = measured[candidate], 0
    for other, values in measured.items():
        if other != candidate and values is not None and dominates(values, point):
            count += 1
            if count >= enough:
                break
    return count
