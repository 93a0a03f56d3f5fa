"""Expanding a syntax tree into a layer stack, with every open decision answered by a resolver.

A decision is a choice `{...|...}` or a braced repeat count `*{...}`. Its parameter name is its
own name when it has one; otherwise `choice<k>` / `repeat<k>` (k = order of appearance in the
string) followed by the repetition indices of every enclosing repeat, outermost first:
in `({M|A} M)*3` the three choices are `choice1[0]`, `choice1[1]`, `choice1[2]`. So the same
string always gives the same names, and an unnamed choice inside a repeat is decided anew for
every repetition while a named one is decided once.
"""

from __future__ import annotations

from typing import Protocol

from search_spaces.layers import LOCAL_ATTENTION, SHARED, Layer
from search_spaces.pattern.ast import Choice, Count, Group, Node, Repeat, Seq, Token, unparse
from search_spaces.pattern.errors import PatternError

MAX_LAYERS = 100_000


class Resolver(Protocol):
    """Answers the open decisions of a pattern (an Optuna trial, a fixed assignment, ...)."""

    def choose(self, name: str, options: tuple[str, ...], node: Choice) -> int:
        """Index of the alternative to take."""

    def count(self, name: str, node: Count) -> int:
        """One of `node.values`."""


def decision_name(node: Choice | Count, path: tuple[int, ...]) -> str:
    if node.name is not None:
        return node.name
    kind = "choice" if isinstance(node, Choice) else "repeat"
    suffix = f"[{','.join(map(str, path))}]" if path else ""
    return f"{kind}{node.auto_id}{suffix}"


def choice_options(node: Choice) -> tuple[str, ...]:
    """The alternatives as text: what Optuna records as the categorical values."""
    return tuple(unparse(alternative) for alternative in node.alternatives)


class _Expander:
    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.named: dict[str, int] = {}  # a name is one decision: asked once, reused after
        self.layers: list[Layer] = []

    def expand(self, node: Node, path: tuple[int, ...]) -> None:
        if isinstance(node, Token):
            self.layers.append(node.layer)
            if len(self.layers) > MAX_LAYERS:
                raise PatternError(f"pattern expands to more than {MAX_LAYERS} layers", node.col)
        elif isinstance(node, Seq):
            for item in node.items:
                self.expand(item, path)
        elif isinstance(node, Group):
            self.expand(node.body, path)
        elif isinstance(node, Repeat):
            for index in range(self.count(node.count, path)):
                self.expand(node.item, path + (index,))
        elif isinstance(node, Choice):
            self.expand(node.alternatives[self.choose(node, path)], path)
        else:  # pragma: no cover - the parser builds only the node types above
            raise TypeError(f"not a pattern node: {node!r}")

    def count(self, count: Count, path: tuple[int, ...]) -> int:
        if not count.braced:
            return count.values[0]
        name = decision_name(count, path)
        if name in self.named:
            return self.named[name]
        value = self.resolver.count(name, count)
        if value not in count.values:
            raise PatternError(f"repeat count {value!r} for {name!r} is not one of "
                               f"{list(count.values)}", count.col)
        if count.name is not None:
            self.named[name] = value
        return value

    def choose(self, choice: Choice, path: tuple[int, ...]) -> int:
        name = decision_name(choice, path)
        if name in self.named:
            return self.named[name]
        index = self.resolver.choose(name, choice_options(choice), choice)
        if choice.name is not None:
            self.named[name] = index
        return index


def expand(tree: Node, resolver: Resolver) -> tuple[Layer, ...]:
    """The layer tokens of the tree, decisions answered by `resolver` (arguments may be open)."""
    expander = _Expander(resolver)
    expander.expand(tree, ())
    return tuple(expander.layers)


class _NoDecisions:
    """The resolver of a concrete pattern: any open decision is an error."""

    def choose(self, name: str, options: tuple[str, ...], node: Choice) -> int:
        raise PatternError(f"choice {name!r} is open: this pattern describes a search space, "
                           "not one architecture", node.col)

    def count(self, name: str, node: Count) -> int:
        if len(node.values) == 1:
            return node.values[0]
        raise PatternError(f"repeat count {name!r} is open: this pattern describes a search "
                           "space, not one architecture", node.col)


def is_concrete(tree: Node) -> bool:
    try:
        expand(tree, _NoDecisions())
    except PatternError:
        return False
    return True


def resolve_layers(tokens: tuple[Layer, ...], *, window: int, ffn: str) -> tuple[Layer, ...]:
    """Fill what the tokens left open: a bare `L` takes `window`, a bare `S` is block 0, a layer
    without a suffix takes `ffn`."""
    resolved = []
    for layer in tokens:
        arg = layer.arg
        if arg is None and layer.mixer == LOCAL_ATTENTION:
            arg = window
        elif arg is None and layer.mixer == SHARED:
            arg = 0
        resolved.append(Layer(layer.mixer, arg, layer.ffn or ffn))
    return tuple(resolved)


def concrete_layers(tree: Node, *, window: int, ffn: str) -> tuple[Layer, ...]:
    """The resolved layer stack of a concrete pattern; PatternError if a decision is open."""
    return resolve_layers(expand(tree, _NoDecisions()), window=window, ffn=ffn)
