"""Recursive-descent parser for the layer-pattern language.

Grammar (whitespace separates items; it is optional next to the punctuation):

    pattern := seq END
    seq     := item (SPACE item)*
    item    := atom ('*' count)*
    atom    := token | '(' seq ')' [ffn] | '{' [name ':'] seq ('|' seq)* '}'
    count   := INT | '{' [name ':'] (INT '..' INT | INT (',' INT)*) '}'
    token   := ('A' | 'L' [INT] | 'M' | 'M2' | 'R' | 'H' | 'S' [INT]) [ffn]
    ffn     := '+' ('mlp' | 'moe' | 'none')

A group's FFN suffix, `(M*6 S)+none`, is the FFN of every layer inside it that has no suffix of
its own; the parser writes it into those tokens, so the tree holds no group-level FFN.

Every failure raises PatternError with the column, what was found and what was expected.
"""

from __future__ import annotations

import re

from search_spaces.layers import FFNS, LOCAL_ATTENTION, MIXERS, MIXERS_WITH_ARG, Layer
from search_spaces.pattern.ast import (Choice, Count, Group, Node, Repeat, Seq, Token, decisions,
                                      unparse)
from search_spaces.pattern.errors import PatternError

MAX_COUNT = 4096  # a repeat count above this is a typo, not an architecture
MAX_DEPTH = 64  # nesting of groups and choices; keeps Python's stack safe
MAX_DIGITS = 9
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_AUTO_NAME = re.compile(r"(choice|repeat)\d+")
_MIXER_LETTERS = "".join(sorted({symbol[0] for symbol in MIXERS}))
DIGITS = tuple("0123456789")  # str.isdigit() also accepts "²" and other Unicode digits
_ITEM_START = "a layer, '(' or '{'"


def _describe(char: str) -> str:
    return "end of pattern" if char == "" else repr(char)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0
        self.next_choice_id = 1
        self.next_count_id = 1

    # -- cursor --------------------------------------------------------------------------------

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def col(self) -> int:
        return self.pos + 1

    def fail(self, expected: str, col: int | None = None) -> PatternError:
        return PatternError(f"expected {expected} but found {_describe(self.peek())}",
                            col or self.col(), self.text)

    def error(self, message: str, col: int) -> PatternError:
        return PatternError(message, col, self.text)

    def skip_space(self) -> bool:
        start = self.pos
        while self.peek() != "" and self.peek().isspace():
            self.pos += 1
        return self.pos > start

    def expect(self, char: str, expected: str | None = None) -> None:
        if self.peek() != char:
            raise self.fail(expected or repr(char))
        self.pos += 1

    # -- grammar -------------------------------------------------------------------------------

    def pattern(self) -> Seq:
        self.skip_space()
        seq = self.seq()
        self.skip_space()
        if self.peek() != "":
            raise self.fail("a space between layers, '*' or end of pattern")
        return seq

    def seq(self) -> Seq:
        col = self.col()
        items = [self.item()]
        while True:
            spaced = self.skip_space()
            char = self.peek()
            if char in ("", ")", "|", "}"):
                return Seq(tuple(items), col)
            if not spaced:
                raise self.fail("a space, '*', '|', ')' or '}' after an item")
            items.append(self.item())

    def item(self) -> Node:
        col = self.col()
        node = self.atom()
        while True:
            save = self.pos
            self.skip_space()
            if self.peek() != "*":
                self.pos = save
                return node
            self.pos += 1
            self.skip_space()
            node = Repeat(node, self.count(), col)

    def atom(self) -> Node:
        char = self.peek()
        if char == "(":
            return self.group()
        if char == "{":
            return self.choice()
        if char != "" and char in _MIXER_LETTERS:
            return self.token()
        raise self.fail(_ITEM_START)

    def nested(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"groups and choices nest deeper than {MAX_DEPTH} levels", self.col())

    def group(self) -> Group:
        col = self.col()
        self.nested()
        self.pos += 1
        self.skip_space()
        body = self.seq()
        self.skip_space()
        self.expect(")", "')' to close the group opened at col %d" % col)
        self.depth -= 1
        if self.peek() == "+":
            body = _with_default_ffn(body, self.ffn_suffix(), self.text)
        return Group(body, col)

    def choice(self) -> Choice:
        col = self.col()
        self.nested()
        self.pos += 1
        self.skip_space()
        name = self.maybe_name()
        auto_id = 0
        if name is None:
            auto_id, self.next_choice_id = self.next_choice_id, self.next_choice_id + 1
        alternatives = []
        seen: dict[Seq, int] = {}
        while True:
            self.skip_space()
            alt_col = self.col()
            alternative = self.seq()
            if alternative in seen:
                raise self.error(f"alternative {unparse(alternative)!r} appears twice in "
                                 "this choice", alt_col)
            seen[alternative] = alt_col
            alternatives.append(alternative)
            self.skip_space()
            if self.peek() == "|":
                self.pos += 1
                continue
            self.expect("}", "'|' or '}' to close the choice opened at col %d" % col)
            break
        self.depth -= 1
        return Choice(tuple(alternatives), name, col, auto_id)

    def maybe_name(self) -> str | None:
        """A `name:` prefix inside braces, or None (and the cursor untouched) if there is none."""
        match = _NAME.match(self.text, self.pos)
        if not match:
            return None
        after = match.end()
        while after < len(self.text) and self.text[after].isspace():
            after += 1
        if after >= len(self.text) or self.text[after] != ":":
            return None
        name = match.group()
        if _AUTO_NAME.fullmatch(name):
            raise self.error(f"name {name!r} is reserved for unnamed choices; pick another",
                             self.col())
        self.pos = after + 1
        self.skip_space()
        return name

    def count(self) -> Count:
        col = self.col()
        if self.peek() in DIGITS:
            return Count((self.integer("a repeat count"),), col=col)
        if self.peek() != "{":
            raise self.fail("a repeat count (a number or '{')")
        self.pos += 1
        self.skip_space()
        name = self.maybe_name()
        auto_id = 0
        if name is None:
            auto_id, self.next_count_id = self.next_count_id, self.next_count_id + 1
        first_col = self.col()
        first = self.integer("a repeat count")
        self.skip_space()
        if self.text.startswith("..", self.pos):
            self.pos += 2
            self.skip_space()
            last = self.integer("the end of the range")
            if last < first:
                raise self.error(f"range {first}..{last} is empty (the end must be >= the start)",
                                 first_col)
            values, is_range = tuple(range(first, last + 1)), True
        else:
            values_list = [first]
            while self.peek() == ",":
                self.pos += 1
                self.skip_space()
                value_col = self.col()
                value = self.integer("a repeat count")
                if value in values_list:
                    raise self.error(f"repeat count {value} is listed twice", value_col)
                values_list.append(value)
                self.skip_space()
            values, is_range = tuple(values_list), False
        self.skip_space()
        self.expect("}", "'..', ',' or '}' in the repeat count opened at col %d" % col)
        return Count(values, name, is_range, True, col, auto_id)

    def integer(self, what: str) -> int:
        col = self.col()
        start = self.pos
        while self.peek() in DIGITS:
            self.pos += 1
        digits = self.text[start:self.pos]
        if not digits:
            raise self.fail(what)
        if len(digits) > MAX_DIGITS or int(digits) > MAX_COUNT:
            raise self.error(f"{what} {digits} is larger than {MAX_COUNT}", col)
        if int(digits) < 1:
            raise self.error(f"{what} must be at least 1, not {digits}", col)
        return int(digits)

    def token(self) -> Token:
        col = self.col()
        mixer = self.peek()
        self.pos += 1
        digits_col = self.col()
        start = self.pos
        while self.peek() in DIGITS:
            self.pos += 1
        digits = self.text[start:self.pos]
        arg: int | None = None
        if mixer == "M" and digits == "2":
            mixer = "M2"
        elif digits and mixer in MIXERS_WITH_ARG:
            if len(digits) > MAX_DIGITS:
                raise self.error(f"argument {digits} of {mixer} is too large", digits_col)
            arg = int(digits)
            if mixer == LOCAL_ATTENTION and arg < 1:
                raise self.error("a local attention window must be at least 1", digits_col)
        elif digits:
            hint = " (Mamba-2 is M2)" if mixer == "M" else ""
            raise self.error(f"{mixer} takes no argument but found {digits!r}{hint}", digits_col)
        ffn = self.ffn_suffix() if self.peek() == "+" else None
        return Token(Layer(mixer, arg, ffn), col)

    def ffn_suffix(self) -> str:
        """`+kind` after a layer or a group; the cursor is on the '+'."""
        self.pos += 1
        ffn_col = self.col()
        start = self.pos
        while self.peek().isalpha():
            self.pos += 1
        word = self.text[start:self.pos]
        if word not in FFNS:
            found = repr(word) if word else _describe(self.peek())
            raise PatternError(f"expected an FFN kind ({', '.join(FFNS)}) after '+' but "
                               f"found {found}", ffn_col, self.text)
        return word


def _with_default_ffn(node: Node, ffn: str, text: str) -> Node:
    """`node` with `ffn` written into every token that has no FFN suffix."""
    if isinstance(node, Token):
        if node.layer.ffn is not None:
            return node
        return Token(Layer(node.layer.mixer, node.layer.arg, ffn), node.col)
    if isinstance(node, Seq):
        return Seq(tuple(_with_default_ffn(item, ffn, text) for item in node.items), node.col)
    if isinstance(node, Group):
        return Group(_with_default_ffn(node.body, ffn, text), node.col)
    if isinstance(node, Repeat):
        return Repeat(_with_default_ffn(node.item, ffn, text), node.count, node.col)
    alternatives = tuple(_with_default_ffn(a, ffn, text) for a in node.alternatives)
    if len(set(alternatives)) < len(alternatives):
        raise PatternError(f"the group's '+{ffn}' makes two alternatives of the choice at col "
                           f"{node.col} the same layers", node.col, text)
    return Choice(alternatives, node.name, node.col, node.auto_id)


def parse(text: str) -> Seq:
    """Parse a pattern (concrete or a search space) into its syntax tree."""
    if not isinstance(text, str):
        raise PatternError(f"a pattern must be a string, not {type(text).__name__}")
    tree = _Parser(text).pattern()
    _check_names(tree, text)
    return tree


def _check_names(tree: Seq, text: str) -> None:
    """Every use of a name must be the same decision: same kind, same options."""
    first_use: dict[str, tuple[Choice | Count, str]] = {}
    for node in decisions(tree):
        if node.name is None:
            continue
        options = (",".join(unparse(a) for a in node.alternatives)
                   if isinstance(node, Choice) else ",".join(map(str, node.values)))
        if node.name not in first_use:
            first_use[node.name] = (node, options)
            continue
        first, first_options = first_use[node.name]
        if type(first) is not type(node):
            raise PatternError(f"name {node.name!r} is used for a layer choice and a repeat count "
                               f"(first at col {first.col}); a name is one decision",
                               node.col, text)
        if first_options != options:
            raise PatternError(f"name {node.name!r} has different options here than at col "
                               f"{first.col}; every use of a name must list the same options",
                               node.col, text)
