"""The layer-pattern language: PATTERN.md's examples, errors, canonical form, properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces import ArchConfig, Layer, PatternError, format_layers, parse, unparse
from search_spaces.layers import FFNS, MIXERS
from search_spaces.pattern import (
    Choice,
    Count,
    Group,
    Repeat,
    Seq,
    Token,
    concrete_layers,
    expand,
    is_concrete,
)


def layers_of(text: str, **dims) -> list[str]:
    """The expanded stack as short strings, every default written out."""
    return [
        layer.mixer + ("" if layer.arg is None else str(layer.arg)) + "+" + layer.ffn
        for layer in ArchConfig.from_pattern(text, **dims).layers
    ]


# -- every example in PATTERN.md ---------------------------------------------------------------


def test_jamba_block_attention_at_offset_4_and_moe_every_other_layer():
    stack = layers_of("(M M+moe M M+moe A M+moe M M+moe)*4")
    assert len(stack) == 32
    assert [i for i, layer in enumerate(stack) if layer.startswith("A")] == [4, 12, 20, 28]
    assert [i for i, layer in enumerate(stack) if layer.endswith("+moe")] == list(range(1, 32, 2))
    assert all(layer.endswith("+mlp") for i, layer in enumerate(stack) if i % 2 == 0)


def test_zamba_shared_block_after_every_six_mamba_layers():
    stack = layers_of("(M*6 S)*13", ffn="none")
    assert len(stack) == 91
    assert [i for i, layer in enumerate(stack) if layer.startswith("S")] == list(range(6, 91, 7))
    assert set(stack) == {"M+none", "S0+none"}


def test_griffin_two_recurrent_blocks_per_local_attention():
    stack = layers_of("(R R L2048)*8")
    assert stack == ["R+mlp", "R+mlp", "L2048+mlp"] * 8


def test_striped_hyena_and_transformer():
    assert layers_of("(H H H A)*8") == ["H+mlp", "H+mlp", "H+mlp", "A+mlp"] * 8
    assert layers_of("A*12") == ["A+mlp"] * 12


def test_mamba_seven_to_one_ratio():
    stack = layers_of("(M*7 A)*4")
    # "28 Mamba layers with an attention layer after every 7"
    assert stack.count("M+mlp") == 28
    assert [i for i, s in enumerate(stack) if s[0] == "A"] == [7, 15, 23, 31]


def test_tokens_arguments_and_suffixes():
    assert layers_of("L", window=32) == ["L32+mlp"]
    assert layers_of("L128 S S1 M2 M2+moe R+none H") == [
        "L128+mlp", "S0+mlp", "S1+mlp", "M2+mlp", "M2+moe", "R+none", "H+mlp"]
    assert layers_of("M+mlp", ffn="moe") == ["M+mlp"]
    assert layers_of("M", ffn="moe") == ["M+moe"]


def test_jamba_like_space_has_named_decisions():
    tree = parse("(M*{run: 3..7} {attn: A|L|S})*{blocks: 2..4}")
    repeat = tree.items[0]
    assert isinstance(repeat, Repeat) and repeat.count == Count((2, 3, 4), "blocks", True, True)
    body = repeat.item.body
    assert body.items[0].count == Count(tuple(range(3, 8)), "run", True, True)
    assert body.items[1] == Choice((Seq((Token(Layer("A")),)), Seq((Token(Layer("L")),)),
                                    Seq((Token(Layer("S")),))), "attn")
    assert not is_concrete(tree)


class Answers:
    """A resolver that records the names it is asked and answers from a table."""

    def __init__(self, choices=None, counts=None):
        self.choices, self.counts, self.asked = choices or {}, counts or {}, []

    def choose(self, name, options, node):
        self.asked.append(name)
        return options.index(self.choices.get(name, options[0]))

    def count(self, name, node):
        self.asked.append(name)
        return self.counts.get(name, node.values[0])


def test_named_choice_is_one_decision_and_unnamed_is_per_repetition():
    periodic = Answers({"slot": "A"})
    stack = expand(parse("({slot: M|A} M M M)*3"), periodic)
    assert [layer.mixer for layer in stack] == ["A", "M", "M", "M"] * 3
    assert periodic.asked == ["slot"]

    free = Answers({f"choice1[{i}]": "A" for i in (0, 5, 11)})
    stack = expand(parse("{M|A}*12"), free)
    assert free.asked == [f"choice1[{i}]" for i in range(12)]
    assert [i for i, layer in enumerate(stack) if layer.mixer == "A"] == [0, 5, 11]


def test_alternatives_can_be_sequences_and_nested_choices():
    answers = Answers({"choice1": "M M"})
    assert [l.mixer for l in expand(parse("{A|M M}"), answers)] == ["M", "M"]
    nested = Answers({"choice1": "{L64|L128} R", "choice2": "L128"})
    stack = expand(parse("{A|{L64|L128} R}"), nested)
    assert [(l.mixer, l.arg) for l in stack] == [("L", 128), ("R", None)]
    assert nested.asked == ["choice1", "choice2"]


def test_searchable_counts_and_stable_positional_names():
    # numbered by order of appearance in the string: the inner count comes first
    answers = Answers(counts={"repeat2": 4, "repeat1[1]": 2})
    stack = expand(parse("(A M*{1,2})*{2..5}"), answers)
    assert answers.asked == ["repeat2", "repeat1[0]", "repeat1[1]", "repeat1[2]", "repeat1[3]"]
    assert [l.mixer for l in stack] == ["A", "M", "A", "M", "M", "A", "M", "A", "M"]
    # the same string, written with other spacing, asks the same names
    again = Answers(counts={"repeat2": 4})
    expand(parse("( A  M * {1, 2} ) * {2..5}"), again)
    assert again.asked == answers.asked


def test_concrete_pattern_refuses_open_decisions():
    with pytest.raises(PatternError, match="col 1: choice 'choice1' is open"):
        concrete_layers(parse("{A|M}"), window=64, ffn="mlp")
    with pytest.raises(PatternError, match="col 3: repeat count 'n' is open"):
        ArchConfig.from_pattern("M*{n: 2..3}")
    assert ArchConfig.from_pattern("M*{3}").depth == 3


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("(M*7 A))", "col 8: expected a space between layers, '*' or end of pattern but found ')'"),
    ("(M A", "col 5: expected ')' to close the group opened at col 1 but found end of pattern"),
    ("M*7 )", "col 5: expected a space between layers, '*' or end of pattern but found ')'"),
    ("", "col 1: expected a layer, '(' or '{' but found end of pattern"),
    ("()", "col 2: expected a layer, '(' or '{' but found ')'"),
    ("M A X", "col 5: expected a layer, '(' or '{' but found 'X'"),
    ("MA", "col 2: expected a space, '*', '|', ')' or '}' after an item but found 'A'"),
    ("A2", "col 2: A takes no argument but found '2'"),
    ("M3", "col 2: M takes no argument but found '3' (Mamba-2 is M2)"),
    ("L0", "col 2: a local attention window must be at least 1"),
    ("M+foo", "col 3: expected an FFN kind (mlp, moe, none) after '+' but found 'foo'"),
    ("M+", "col 3: expected an FFN kind (mlp, moe, none) after '+' but found end of pattern"),
    ("M*", "col 3: expected a repeat count (a number or '{') but found end of pattern"),
    ("M*0", "col 3: a repeat count must be at least 1, not 0"),
    ("M*99999", "col 3: a repeat count 99999 is larger than 4096"),
    ("M*{3..2}", "col 4: range 3..2 is empty (the end must be >= the start)"),
    ("M*{2,2}", "col 6: repeat count 2 is listed twice"),
    ("M*{2;3}", "col 5: expected '..', ',' or '}' in the repeat count opened at col 3 but found ';'"),
    ("{A|A}", "col 4: alternative 'A' appears twice in this choice"),
    ("{A|}", "col 4: expected a layer, '(' or '{' but found '}'"),
    ("{A|M", "col 5: expected '|' or '}' to close the choice opened at col 1 but found end of pattern"),
    ("{x: A|M} {x: A|L}", "col 10: name 'x' has different options here than at col 1"),
    ("M*{x: 2..3} {x: A|M}", "col 13: name 'x' is used for a layer choice and a repeat count"),
    ("{choice1: A|M}", "col 2: name 'choice1' is reserved"),
    ("a", "col 1: expected a layer, '(' or '{' but found 'a'"),
    ("(" * 70 + "A" + ")" * 70, "col 65: groups and choices nest deeper than 64 levels"),
])
def test_malformed_patterns_name_the_column(text, message):
    with pytest.raises(PatternError) as caught:
        parse(text)
    assert str(caught.value).startswith(message)
    assert caught.value.col == int(message.split(":")[0].split()[1])


def test_expansion_size_is_bounded():
    with pytest.raises(PatternError, match="more than 100000 layers"):
        ArchConfig.from_pattern("((M*100)*100)*100")


def test_non_string_input_is_a_pattern_error():
    with pytest.raises(PatternError):
        parse(None)  # type: ignore[arg-type]


# -- canonical form ----------------------------------------------------------------------------


@pytest.mark.parametrize("written, canonical", [
    ("M M M M M M M A M M M M M M M A", "(M*7 A)*2"),
    ("(M*7 A)*3 M M", "(M*7 A)*3 M*2"),
    ("M M", "M*2"),
    ("A*12", "A*12"),
    ("(R R L2048)*8", "(R*2 L2048)*8"),
    ("((M*6 S0))*13", "(M*6 S)*13"),
    ("L L64", "L64*2"),
    ("M+mlp M+moe M M+moe", "(M M+moe)*2"),
])
def test_canonical_form_folds_runs_and_drops_defaults(written, canonical):
    assert ArchConfig.from_pattern(written).pattern == canonical


def test_equal_stacks_written_differently_share_canonical_form_and_fingerprint():
    a = ArchConfig.from_pattern("(M M+moe M M+moe A M+moe M M+moe)*4")
    b = ArchConfig.from_pattern("((M M+moe)*2 A M+moe M M+moe)*2 (M M+moe M M+moe A M+moe (M M+moe))*2")
    assert a.layers == b.layers and a.pattern == b.pattern and a.fingerprint() == b.fingerprint()


@pytest.mark.parametrize("written, dims, canonical", [
    ("(A+moe)*4", {}, "A+moe*4"),
    ("(M*6 S)*13", {"ffn": "none"}, "(M*6 S)+none*13"),
    ("M*8", {"ffn": "none"}, "M+none*8"),
    ("M*6 S A+mlp", {"ffn": "none"}, "M+none*6 S+none A"),
    ("M M2 R H S A+mlp", {"ffn": "none"}, "(M M2 R H S A+mlp)+none"),
    ("M A+moe", {"ffn": "none"}, "M+none A+moe"),
])
def test_printed_pattern_means_the_same_layers_without_the_ffn_dim(written, dims, canonical):
    arch = ArchConfig.from_pattern(written, **dims)
    assert arch.pattern == canonical
    assert ArchConfig.from_pattern(arch.pattern) == arch
    assert "ffn" not in arch.to_dict()


def test_a_group_suffix_is_the_ffn_of_its_layers_without_one():
    assert layers_of("(M A+mlp)+none*2") == ["M+none", "A+mlp"] * 2
    assert layers_of("((M)+moe A)+none") == ["M+moe", "A+none"]
    assert unparse(parse("({M|A+none} M)+moe")) == "({M+moe|A+none} M+moe)"
    with pytest.raises(PatternError, match="col 2: the group's '\\+none' makes two"):
        parse("({M|M+none})+none")
    with pytest.raises(PatternError, match="expected an FFN kind"):
        parse("(M A)+gelu")


def test_long_stacks_fold_without_the_cubic_search():
    arch = ArchConfig.from_pattern("(M*7 A)*40")
    assert arch.depth == 320 and arch.pattern == "(M*7 A)*40"
    irregular = ArchConfig.from_pattern("M*200 A")
    assert irregular.pattern == "M*200 A"


# -- properties --------------------------------------------------------------------------------

NAMES = st.sampled_from(["attn", "run", "x", "blocks"])
layer_strategy = st.builds(
    Layer,
    mixer=st.sampled_from(MIXERS),
    ffn=st.one_of(st.none(), st.sampled_from(FFNS)),
).flatmap(lambda layer: st.builds(
    Layer, st.just(layer.mixer),
    st.integers(1, 4096) if layer.mixer == "L" else
    st.one_of(st.none(), st.integers(0, 9)) if layer.mixer == "S" else st.none(),
    st.just(layer.ffn)))


def concrete_tree(max_leaves=12):
    leaf = st.builds(Token, layer_strategy)
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(lambda items: Group(Seq(tuple(items))), st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda item, n: Repeat(item, Count((n,))), inner, st.integers(1, 4)),
        ),
        max_leaves=max_leaves,
    ).map(lambda node: Seq((node,)))


@given(st.lists(concrete_tree(), min_size=1, max_size=3))
@settings(max_examples=150, deadline=None)
def test_concrete_trees_round_trip_through_unparse_and_parse(parts):
    tree = Seq(tuple(item for part in parts for item in part.items))
    assert parse(unparse(tree)) == tree


@given(st.lists(layer_strategy.map(
    lambda l: Layer(l.mixer, l.arg if l.arg is not None else (64 if l.mixer == "L" else 0 if l.mixer == "S" else None),
                    l.ffn or "mlp")), min_size=1, max_size=40),
       st.sampled_from(FFNS))
@settings(max_examples=200, deadline=None)
def test_layer_stacks_round_trip_through_format_and_parse(layers, default_ffn):
    text = format_layers(layers, default_ffn=default_ffn)
    assert concrete_layers(parse(text), window=1, ffn=default_ffn) == tuple(layers)
    # canonical: formatting the parsed stack again gives the same string
    assert format_layers(concrete_layers(parse(text), window=1, ffn=default_ffn),
                         default_ffn=default_ffn) == text


search_tree = st.recursive(
    st.builds(Token, layer_strategy),
    lambda inner: st.one_of(
        st.builds(lambda items: Group(Seq(tuple(items))), st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda item, values, name, is_range: Repeat(
            item, Count(tuple(range(min(values), max(values) + 1)) if is_range else tuple(sorted(set(values))),
                        None, is_range, True)), inner, st.lists(st.integers(1, 5), min_size=1, max_size=3),
            st.none(), st.booleans()),
        st.builds(lambda alts: Choice(tuple(Seq(tuple(a)) for a in alts)),
                  st.lists(st.lists(inner, min_size=1, max_size=2), min_size=1, max_size=3,
                           unique_by=lambda a: unparse(Seq(tuple(a))))),
    ),
    max_leaves=10,
)


@given(search_tree)
@settings(max_examples=150, deadline=None)
def test_search_space_trees_round_trip(node):
    tree = Seq((node,))
    assert parse(unparse(tree)) == tree


ALPHABET = "ALMRHS2+moenlpu*(){}|:.,0123456789 xyz_-\n\t"


@given(st.text(alphabet=ALPHABET, max_size=40))
@settings(max_examples=600, deadline=None)
def test_random_strings_raise_only_pattern_errors(text):
    try:
        tree = parse(text)
    except PatternError as error:
        assert error.col is not None and 1 <= error.col <= len(text) + 1
        return
    assert parse(unparse(tree)) == tree


@given(st.text(max_size=30))
@settings(max_examples=300, deadline=None)
def test_arbitrary_unicode_raises_only_pattern_errors(text):
    try:
        parse(text)
    except PatternError:
        pass
