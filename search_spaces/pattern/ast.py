"""Syntax tree of the layer-pattern language (docs/PATTERN.md).

    Seq     items separated by spaces           `M M+moe A`
    Token   one layer: mixer, argument, FFN     `L128+none`
    Group   a parenthesised sequence            `(M A)`
    Repeat  an item and its count               `X*4`, `X*{2..6}`, `X*{n: 2,4,8}`
    Choice  alternatives, each a sequence       `{A|L64|M M}`, `{attn: A|L}`

Columns (`col`, 1-based) and the positional ids of unnamed decisions are metadata: they are not
part of node equality, so two trees that print the same compare equal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Union

from search_spaces.layers import Layer


@dataclass(frozen=True)
class Token:
    layer: Layer
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Seq:
    items: tuple["Node", ...]
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Group:
    body: Seq
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Count:
    """A repeat count: one fixed value, or a searchable set of values.

    `braced` counts (`*{...}`) are decisions, even with one value; `is_range` keeps how one was
    written (`2..6` rather than `2,3,4,5,6`) so that it prints back the same and is sampled as an
    ordered integer.
    """

    values: tuple[int, ...]
    name: str | None = None
    is_range: bool = False
    braced: bool = False
    col: int = field(default=0, compare=False)
    auto_id: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Repeat:
    item: "Node"
    count: Count
    col: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Choice:
    alternatives: tuple[Seq, ...]
    name: str | None = None
    col: int = field(default=0, compare=False)
    auto_id: int = field(default=0, compare=False)


Node = Union[Token, Seq, Group, Repeat, Choice]


def walk(node: Node) -> Iterator[Node]:
    """Every node of the tree, parents before children, in the order of the string."""
    yield node
    if isinstance(node, Seq):
        for item in node.items:
            yield from walk(item)
    elif isinstance(node, Group):
        yield from walk(node.body)
    elif isinstance(node, Repeat):
        yield from walk(node.item)
    elif isinstance(node, Choice):
        for alternative in node.alternatives:
            yield from walk(alternative)


def decisions(node: Node) -> Iterator[Choice | Count]:
    """Every choice and braced repeat count of the tree (each node once, however often it
    is repeated when the tree expands)."""
    for child in walk(node):
        if isinstance(child, Choice):
            yield child
        elif isinstance(child, Repeat) and child.count.braced:
            yield child.count


def unparse(node: Node) -> str:
    """The pattern text of a parsed node (`parse(unparse(node)) == node`, columns aside)."""
    if isinstance(node, Token):
        return node.layer.token(default_shared_id=-1)
    if isinstance(node, Seq):
        return " ".join(unparse(item) for item in node.items)
    if isinstance(node, Group):
        return f"({unparse(node.body)})"
    if isinstance(node, Repeat):
        return f"{unparse(node.item)}*{unparse_count(node.count)}"
    if isinstance(node, Choice):
        prefix = f"{node.name}: " if node.name else ""
        return "{" + prefix + "|".join(unparse(a) for a in node.alternatives) + "}"
    raise TypeError(f"not a pattern node: {node!r}")


def unparse_count(count: Count) -> str:
    if not count.braced:
        return str(count.values[0])
    prefix = f"{count.name}: " if count.name else ""
    if count.is_range:
        body = f"{count.values[0]}..{count.values[-1]}"
    else:
        body = ",".join(str(v) for v in count.values)
    return "{" + prefix + body + "}"
