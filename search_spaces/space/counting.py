"""How many distinct parameter assignments a search space has, without enumerating them.

The count is what a grid over the space would visit: every combination of decisions that
Optuna would record as a distinct set of parameters, times the searchable dims that the
resulting layers make relevant. It is computed by recursion over the pattern tree; each
subtree yields a multiset of outcomes keyed by (named decisions reached, layer features), so
that conditional dims and named decisions that are only reached on some branches are counted
exactly once.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from typing import Mapping

from search_spaces.arch import relevant_fields
from search_spaces.layers import FFNS, LOCAL_ATTENTION, MIXERS, MLP
from search_spaces.pattern import Choice, Group, Node, Repeat, Seq, Token, decisions
from search_spaces.space.dims import DimSpec, SpaceError

BARE_WINDOW = "bare L"  # a layer that takes the `window` dim
DEFAULT_FFN = "default ffn"  # a layer that takes the `ffn` dim
MAX_NAMED_ASSIGNMENTS = 1_000_000

Outcomes = Counter  # (frozenset of names reached, frozenset of features) -> count


def _combine(left: Outcomes, right: Outcomes) -> Outcomes:
    out: Outcomes = Counter()
    for (names_a, feats_a), count_a in left.items():
        for (names_b, feats_b), count_b in right.items():
            out[names_a | names_b, feats_a | feats_b] += count_a * count_b
    return out


def _power(base: Outcomes, exponent: int) -> Outcomes:
    result: Outcomes = Counter({(frozenset(), frozenset()): 1})
    while exponent:
        if exponent & 1:
            result = _combine(result, base)
        base = _combine(base, base)
        exponent >>= 1
    return result


def _tag(outcomes: Outcomes, name: str) -> Outcomes:
    return Counter({(names | {name}, feats): c for (names, feats), c in outcomes.items()})


def _token_features(token: Token) -> frozenset[str]:
    layer = token.layer
    feats = {layer.mixer, layer.ffn if layer.ffn is not None else DEFAULT_FFN}
    if layer.mixer == LOCAL_ATTENTION and layer.arg is None:
        feats.add(BARE_WINDOW)
    return frozenset(feats)


def _outcomes(node: Node, env: Mapping[str, int]) -> Outcomes:
    if isinstance(node, Token):
        return Counter({(frozenset(), _token_features(node)): 1})
    if isinstance(node, Seq):
        result = _outcomes(node.items[0], env)
        for item in node.items[1:]:
            result = _combine(result, _outcomes(item, env))
        return result
    if isinstance(node, Group):
        return _outcomes(node.body, env)
    if isinstance(node, Repeat):
        body = _outcomes(node.item, env)
        count = node.count
        if not count.braced:
            return _power(body, count.values[0])
        if count.name is not None:
            return _tag(_power(body, env[count.name]), count.name)
        total: Outcomes = Counter()
        for value in count.values:
            total.update(_power(body, value))
        return total
    if isinstance(node, Choice):
        if node.name is not None:
            return _tag(_outcomes(node.alternatives[env[node.name]], env), node.name)
        total = Counter()
        for alternative in node.alternatives:
            total.update(_outcomes(alternative, env))
        return total
    raise TypeError(f"not a pattern node: {node!r}")


def named_domains(tree: Node) -> dict[str, tuple[int, ...]]:
    """Each named decision and its possible answers (alternative indices, or counts)."""
    return {node.name: (tuple(range(len(node.alternatives))) if isinstance(node, Choice)
                        else node.values)
            for node in decisions(tree) if node.name is not None}


def _dims_factor(features: frozenset[str], dims: Mapping[str, DimSpec]) -> int | None:
    """Assignments of the searchable dims that layers with these features make relevant."""

    def product(names: set[str]) -> int | None:
        total = 1
        for name in names:
            values = dims[name].values() if name in dims else (None,)
            if values is None:
                return None
            total *= len(values)
        return total

    kinds = {f for f in features if f in MIXERS or f in FFNS}
    extra = {"window"} if BARE_WINDOW in features else set()
    if DEFAULT_FFN not in features:
        return product(set(relevant_fields(kinds)) | extra)
    ffn_spec = dims.get("ffn")
    total = 0
    for ffn in (ffn_spec.values() if ffn_spec else (MLP,)):
        part = product(set(relevant_fields(kinds | {ffn})) | extra)
        if part is None:
            return None
        total += part
    return total


def count_assignments(tree: Node, dims: Mapping[str, DimSpec]) -> int | None:
    """The number of distinct parameter assignments; None if a searchable dim is continuous."""
    domains = named_domains(tree)
    names = sorted(domains)
    if math.prod(len(domains[n]) for n in names) > MAX_NAMED_ASSIGNMENTS:
        raise SpaceError(f"the named decisions {', '.join(names)} have more than "
                         f"{MAX_NAMED_ASSIGNMENTS} combinations; the space is too large to count")
    seen: dict[tuple, int] = {}
    for combo in itertools.product(*(domains[n] for n in names)):
        env = dict(zip(names, combo))
        for (reached, features), count in _outcomes(tree, env).items():
            # Assignments that differ only in names this branch never reached are the same
            # parameters to Optuna: count them once.
            key = (tuple(sorted((n, env[n]) for n in reached)), features)
            seen.setdefault(key, count)
    total = 0
    for (_, features), count in seen.items():
        factor = _dims_factor(features, dims)
        if factor is None:
            return None
        total += count * factor
    return total
