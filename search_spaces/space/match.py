"""Which parameters make a space produce a given architecture (to enqueue baselines).

`params_for(space, arch)` matches the architecture's layer stack against the pattern tree by
backtracking (a repeat count or a choice is tried value by value; named decisions must agree
wherever they are reached; a bare `L` fixes the `window` dim and a layer without a suffix the
`ffn` dim), then takes every searchable dim from the architecture, or the nearest value the
space allows when the architecture's value is outside it. The result is replayed through
`SearchSpace.sample` with Optuna's FixedTrial, so what it returns is exactly what the space
samples from those parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Iterator

from search_spaces.arch import ArchConfig
from search_spaces.layers import LOCAL_ATTENTION, SHARED, Layer
from search_spaces.pattern import Choice, Count, Group, Node, Repeat, Seq, Token
from search_spaces.pattern.expand import choice_options, decision_name
from search_spaces.space.dims import CategoricalDim, FixedDim, FloatDim, IntDim

if TYPE_CHECKING:
    from search_spaces.space.space import SearchSpace

MAX_STEPS = 200_000  # backtracking effort before giving up on a pathological pattern


@dataclass(frozen=True)
class Match:
    """Parameters that make the space sample `arch`, and which widths had to change."""

    params: dict[str, Any]
    arch: ArchConfig
    adjusted: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # dim -> (wanted, used)


class _GiveUp(Exception):
    pass


class _Matcher:
    """Generators over the ways a node can consume `target[pos:]`, yielding (end, decisions)."""

    def __init__(self, target: tuple[Layer, ...]) -> None:
        self.target = target
        self.steps = 0

    def match(self, node: Node, pos: int, path: tuple[int, ...],
              state: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _GiveUp
        if isinstance(node, Token):
            if pos < len(self.target):
                new_state = _match_token(node.layer, self.target[pos], state)
                if new_state is not None:
                    yield pos + 1, new_state
        elif isinstance(node, Seq):
            yield from self._sequence(node.items, 0, pos, path, state)
        elif isinstance(node, Group):
            yield from self.match(node.body, pos, path, state)
        elif isinstance(node, Repeat):
            for count, count_state in _decide_count(node.count, path, state):
                yield from self._repeat(node.item, count, 0, pos, path, count_state)
        elif isinstance(node, Choice):
            name = decision_name(node, path)
            options = choice_options(node)
            for index, alternative in enumerate(node.alternatives):
                if name in state and state[name] != options[index]:
                    continue
                yield from self.match(alternative, pos, path, {**state, name: options[index]})

    def _sequence(self, items: tuple[Node, ...], index: int, pos: int, path: tuple[int, ...],
                  state: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
        if index == len(items):
            yield pos, state
            return
        for end, new_state in self.match(items[index], pos, path, state):
            yield from self._sequence(items, index + 1, end, path, new_state)

    def _repeat(self, item: Node, count: int, done: int, pos: int, path: tuple[int, ...],
                state: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
        if done == count:
            yield pos, state
            return
        for end, new_state in self.match(item, pos, path + (done,), state):
            yield from self._repeat(item, count, done + 1, end, path, new_state)


def _decide_count(count: Count, path: tuple[int, ...],
                  state: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    if not count.braced:
        yield count.values[0], state
        return
    name = decision_name(count, path)
    for value in count.values:
        if name in state and state[name] != value:
            continue
        yield value, {**state, name: value}


def _match_token(token: Layer, layer: Layer, state: dict[str, Any]) -> dict[str, Any] | None:
    """The decisions after `token` produced `layer`, or None when it cannot."""
    if token.mixer != layer.mixer:
        return None
    state = dict(state)
    if token.arg is not None:
        if token.arg != layer.arg:
            return None
    elif token.mixer == LOCAL_ATTENTION:
        if state.setdefault("window", layer.arg) != layer.arg:
            return None
    elif token.mixer == SHARED and layer.arg != 0:
        return None
    if token.ffn is not None:
        if token.ffn != layer.ffn:
            return None
    elif state.setdefault("ffn", layer.ffn) != layer.ffn:
        return None
    return state


def _nearest(spec: Any, value: Any) -> Any:
    """`value` if the dim allows it, else the allowed value nearest to it."""
    if isinstance(spec, FixedDim):
        return spec.value
    if isinstance(spec, CategoricalDim):
        if value in spec.choices:
            return value
        numeric = [c for c in spec.choices if isinstance(c, (int, float))]
        if numeric and isinstance(value, (int, float)):
            return min(numeric, key=lambda c: (abs(c - value), c))
        return spec.choices[0]
    if isinstance(spec, IntDim):
        clamped = min(max(int(value), spec.low), spec.high)
        return spec.low + round((clamped - spec.low) / spec.step) * spec.step
    if isinstance(spec, FloatDim):
        clamped = min(max(float(value), spec.low), spec.high)
        if spec.step is None:
            return clamped
        return spec.low + round((clamped - spec.low) / spec.step) * spec.step
    raise TypeError(f"not a dim spec: {spec!r}")


def _derived(arch: ArchConfig, name: str) -> bool:
    """Whether `name` holds the value derived from the other widths (d_ff from d_model, ...):
    such a field follows an adjusted width and is not itself worth reporting."""
    if {f.name: f for f in fields(ArchConfig)}[name].default is not None:
        return False
    return getattr(ArchConfig.from_dict({**arch.to_dict(), name: None}), name) == \
        getattr(arch, name)


def params_for(space: "SearchSpace", arch: ArchConfig) -> Match | None:
    """Parameters with which `space` samples `arch`'s layers (None: no way to produce them)."""
    from optuna.trial import FixedTrial

    matcher = _Matcher(arch.layers)
    try:
        found = next((state for end, state in matcher.match(space.tree, 0, (), {})
                      if end == len(arch.layers)), None)
    except _GiveUp:
        return None
    if found is None:
        return None
    params = {name: value for name, value in found.items() if name not in ("window", "ffn")}
    for name in ("window", "ffn"):
        if name in found and name in space.dims:
            params[name] = _nearest(space.dims[name], found[name])
            if params[name] != found[name]:
                return None  # the layer stack itself would change
    for name in arch.relevant_fields():
        spec = space.dims.get(name)
        if spec is not None and spec.searchable and name not in ("window", "ffn"):
            params[name] = _nearest(spec, getattr(arch, name))
    try:
        candidate = space.sample(FixedTrial(params))
    except ValueError:  # a combination of adjusted widths that no model can have
        return None
    if candidate.arch.layers != arch.layers:
        return None
    adjusted = {name: (getattr(arch, name), getattr(candidate.arch, name))
                for name in arch.relevant_fields()
                if getattr(arch, name) != getattr(candidate.arch, name)
                and not (_derived(arch, name) and _derived(candidate.arch, name))}
    return Match(params, candidate.arch, adjusted)
