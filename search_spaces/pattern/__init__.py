"""The layer-pattern language: parse, print, expand (spec: docs/PATTERN.md)."""

from search_spaces.pattern.ast import (Choice, Count, Group, Node, Repeat, Seq, Token, decisions,
                                      unparse, walk)
from search_spaces.pattern.errors import PatternError
from search_spaces.pattern.expand import (
    MAX_LAYERS,
    Resolver,
    choice_options,
    concrete_layers,
    decision_name,
    expand,
    is_concrete,
    resolve_layers,
)
from search_spaces.pattern.parser import parse
from search_spaces.pattern.render import format_layers

__all__ = [
    "MAX_LAYERS", "Choice", "Count", "Group", "Node", "PatternError", "Repeat", "Resolver",
    "Seq", "Token", "choice_options", "concrete_layers", "decision_name", "expand",
    "decisions", "format_layers", "is_concrete", "parse", "resolve_layers", "unparse", "walk",
]
