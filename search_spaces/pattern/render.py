"""Turning trees and layer stacks back into text.

`unparse(tree)` prints any syntax tree so that `parse(unparse(tree)) == tree`.
`format_layers(layers)` prints a concrete layer stack in its canonical form: the shortest string
that folds repeated runs as `X*N` and `(...)*N`, chosen deterministically, so that every way of
writing one stack gives the same string.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

from search_spaces.layers import FFNS, MLP, Layer
from search_spaces.pattern.ast import Group, Repeat, unparse, unparse_count
from search_spaces.pattern.parser import parse


def format_layers(layers: tuple[Layer, ...] | list[Layer], default_ffn: str | None = MLP) -> str:
    """The canonical string of a concrete layer stack, read with `default_ffn` as the FFN of a
    layer without a suffix (mlp, the parser's default, so that the string means the stack on
    its own).

    Written as the shortest folding found by dynamic programming over every interval of the
    stack (ties prefer fewer spaces, then a repeat, then the earliest split), so it depends only
    on the stack. Stacks longer than DP_MAX_LAYERS (the DP is cubic) fold their smallest period
    and then runs. When most layers have another FFN than `default_ffn`, the stack is also
    written with that FFN as a group suffix (`(M*6 S)+none*13`), and the shorter string wins.
    """
    if not layers:
        raise ValueError("an empty layer stack has no pattern")
    explicit = _fold(tuple(layer.token(default_ffn) for layer in layers))
    counts = Counter(layer.ffn for layer in layers)
    # Most common wins; ties go to the order of FFNS, so layer order never decides.
    common = max(FFNS, key=lambda kind: (counts[kind], -FFNS.index(kind)))
    if default_ffn is None or common == default_ffn or counts[common] == 0:
        return explicit
    grouped = _group_suffix(_fold(tuple(layer.token(common) for layer in layers)), common)
    return grouped if _shorter(grouped, explicit) else explicit


def _group_suffix(text: str, ffn: str) -> str:
    """`text` (no layer in it written without a suffix means anything but `ffn`) with `ffn` as
    the suffix of a group around it: `(body)*N` becomes `(body)+ffn*N`, anything else
    `(text)+ffn`."""
    items = parse(text).items
    if len(items) == 1 and isinstance(items[0], Repeat) and isinstance(items[0].item, Group):
        repeat = items[0]
        return f"({unparse(repeat.item.body)})+{ffn}*{unparse_count(repeat.count)}"
    return f"({text})+{ffn}"


DP_MAX_LAYERS = 160


@lru_cache(maxsize=4096)
def _fold(tokens: tuple[str, ...]) -> str:
    n = len(tokens)
    # ids make the "is this interval a repetition" test compare small ints.
    index: dict[str, int] = {}
    ids = [index.setdefault(t, len(index)) for t in tokens]
    if n > DP_MAX_LAYERS:
        return _fold_long(tokens, ids)
    best: dict[tuple[int, int], str] = {}
    for length in range(1, n + 1):
        for start in range(0, n - length + 1):
            end = start + length
            if length == 1:
                best[start, end] = tokens[start]
                continue
            candidate = None
            for period in range(1, length // 2 + 1):
                if length % period == 0 and _is_repetition(ids, start, end, period):
                    unit = best[start, start + period]
                    atom = unit if _is_atom(unit) else f"({unit})"
                    text = f"{atom}*{length // period}"
                    if candidate is None or _shorter(text, candidate):
                        candidate = text
            for split in range(start + 1, end):
                text = f"{best[start, split]} {best[split, end]}"
                if candidate is None or _shorter(text, candidate):
                    candidate = text
            best[start, end] = candidate
    return best[0, n]


def _fold_long(tokens: tuple[str, ...], ids: list[int]) -> str:
    n = len(tokens)
    for period in range(1, n // 2 + 1):
        if n % period == 0 and _is_repetition(ids, 0, n, period):
            unit = _fold(tokens[:period])
            return f"{unit if _is_atom(unit) else f'({unit})'}*{n // period}"
    runs: list[str] = []
    start = 0
    while start < n:
        end = start
        while end < n and ids[end] == ids[start]:
            end += 1
        runs.append(tokens[start] if end - start == 1 else f"{tokens[start]}*{end - start}")
        start = end
    return " ".join(runs)


def _shorter(text: str, than: str) -> bool:
    """Fewer characters, then fewer top-level spaces (so `M*2` beats `M M`)."""
    return (len(text), text.count(" ")) < (len(than), than.count(" "))


def _is_repetition(ids: list[int], start: int, end: int, period: int) -> bool:
    return all(ids[i] == ids[i - period] for i in range(start + period, end))


def _is_atom(text: str) -> bool:
    """A single layer token (`M`, `L64+moe`), which needs no parentheses before `*`."""
    return " " not in text and "*" not in text and "(" not in text
