"""Every parameter assignment of a finite space, by replaying `SearchSpace.decide`.

A replay trial answers each suggestion from an odometer over the decisions seen so far: new
decisions start at their first value, and after each run the last decision that has values left
advances (the ones after it are forgotten, since they may not be asked again). Because the space's
own sampling code asks the questions, conditional parameters and named decisions come out exactly
as Optuna would record them.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

from search_spaces.space.dims import SpaceError


class Decides(Protocol):
    """What enumerating needs of a space (`SearchSpace` has it): its size, and asking a
    trial-like object for every decision of one candidate."""

    def size(self) -> int | None: ...

    def decide(self, trial: Any) -> Any: ...


class _ReplayTrial:
    def __init__(self, prefix: list[int]) -> None:
        self.prefix = prefix
        self.sizes: list[int] = []
        self.params: dict[str, Any] = {}

    def _pick(self, name: str, options: list[Any]) -> Any:
        position = len(self.sizes)
        index = self.prefix[position] if position < len(self.prefix) else 0
        self.sizes.append(len(options))
        self.params[name] = options[index]
        return options[index]

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self._pick(name, list(choices))

    def suggest_int(self, name: str, low: int, high: int, step: int = 1, log: bool = False) -> int:
        return self._pick(name, list(range(low, high + 1, step)))

    def suggest_float(self, name: str, low: float, high: float, step: float | None = None,
                      log: bool = False) -> float:
        if step is None:
            raise SpaceError(f"dims.{name}: a continuous range cannot be enumerated; give it a "
                             "step or a list of values for grid search")
        count = int((high - low) / step + 1e-9) + 1
        return self._pick(name, [low + i * step for i in range(count)])


def enumerate_params(space: Decides, limit: int) -> Iterator[dict[str, Any]]:
    size = space.size()
    if size is None:
        raise SpaceError("the space has a continuous dim; grid search needs finite choices")
    if size > limit:
        raise SpaceError(f"the space has {size} assignments, more than the limit of {limit}")
    prefix: list[int] = []
    while True:
        trial = _ReplayTrial(prefix)
        space.decide(trial)
        yield dict(trial.params)
        indices = (prefix + [0] * len(trial.sizes))[: len(trial.sizes)]
        while indices and indices[-1] + 1 >= trial.sizes[len(indices) - 1]:
            indices.pop()
        if not indices:
            return
        indices[-1] += 1
        prefix = indices
