"""The documents stay true: every pattern example in README.md and docs/*.md parses, the
canonical forms PATTERN.md lists are canonical, and no link leaves the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from search_spaces import ArchConfig, parse

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.M | re.S)
SUFFIX = re.compile(r"\+(mlp|moe|none)\b")
NAME = re.compile(r"\b[a-z_][a-z_0-9]*\s*:")


def looks_like_pattern(text: str) -> bool:
    """Layer tokens, suffixes, repeats, groups and choices only, with at least one layer:
    `(M*7 A)*4`, `{attn: A|L|S}`, `M2`; not `ffn`, `X*N`, `(...)` or an error message."""
    bare = NAME.sub("", SUFFIX.sub("", text))
    return (re.fullmatch(r"[AMRLHS0-9*(){}|,. ]+", bare) is not None
            and re.search(r"[AMRLHS]", bare) is not None)


def examples(path: Path) -> list[str]:
    """Code spans of the prose and tables, and the quoted strings and `pattern:` values of
    the code blocks, that look like patterns."""
    text = path.read_text()
    found = []
    for block in FENCE.findall(text):
        found += re.findall(r'"([^"\n]+)"', block)
        found += re.findall(r"^\s*pattern:\s*([^\"\s#][^#\n]*?)\s*(?:#.*)?$", block, re.M)
    prose = FENCE.sub("", text)
    found += [span.replace("\\|", "|") for span in re.findall(r"`([^`\n]+)`", prose)]
    return [example for example in found if looks_like_pattern(example)]


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_every_pattern_example_parses(path):
    for example in examples(path):
        parse(example)  # PatternError names the example and the column


def test_the_examples_are_found():
    """The extraction finds what it must: the spec's and README's examples, table rows with
    escaped bars, the quoted arguments and YAML values of code blocks."""
    found = {example for path in DOCUMENTS for example in examples(path)}
    for example in ("(M M+moe M M+moe A M+moe M M+moe)*4", "({slot: M|A} M M M)*3",
                    "(M*{run: 3..7} {attn: A|L|S})*{blocks: 2..4}", "(M*7 A)*3", "L128",
                    "M+none M2+none R+none H+none S+none A+mlp", "(M*6 S)+none*13"):
        assert example in found, example
    assert len(found) >= 40
    assert not looks_like_pattern("X*{2..6}") and not looks_like_pattern("ffn: none")
    assert not looks_like_pattern("col 9: expected a layer, '(' or '{' but found ')'")


def test_the_canonical_forms_listed_are_canonical():
    section = (ROOT / "docs" / "PATTERN.md").read_text().split("## Canonical form")[1]
    table = section.split("## ")[0]
    rows = re.findall(r"^\| (.+?) \| `([^`]+)` \|$", table, re.M)
    assert len(rows) == 4
    for _, canonical in rows:
        assert ArchConfig.from_pattern(canonical).pattern == canonical


def test_no_link_leaves_the_repository():
    for path in DOCUMENTS:
        assert "../shared" not in path.read_text(), path.name
        for target in re.findall(r"\]\(([^)#]+)\)", path.read_text()):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.name}: {target}"
