"""ArchConfig: validation, derived widths, exact round trips, canonical form and fingerprint."""

from __future__ import annotations

import json
import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from search_spaces import ArchConfig, ArchConfigError, Layer, load_arch, arch_names


@pytest.mark.parametrize("pattern, dims, message", [
    ("A", {"d_model": 100, "n_heads": 3}, "n_heads=3 must divide d_model=100"),
    ("A", {"n_heads": 4, "n_kv_heads": 3}, "n_kv_heads=3 must divide n_heads=4"),
    ("A", {"d_model": 12, "n_heads": 4}, "rope_fraction=1.0 of head dimension 3 is 3 channels: "
                                         "rotary embeddings need an even whole number"),
    ("A", {"d_model": 64, "n_heads": 4, "rope_fraction": 0.3}, "rope_fraction=0.3 of head "
                                                               "dimension 16 is 4.8 channels"),
    ("A", {"rope_fraction": 1.5}, "rope_fraction=1.5 must be a number from 0 to 1"),
    ("A", {"ffn_act": "tanh"}, "ffn_act='tanh' must be one of silu, gelu, gelu_tanh, relu, relu2"),
    ("A", {"ffn_gated": "yes"}, "ffn_gated='yes' must be true or false"),
    ("M+moe", {"moe_experts": 2, "moe_top_k": 3}, "moe_top_k=3 must be at most moe_experts=2"),
    ("M2", {"d_model": 64, "expand": 2, "m2_head_dim": 48}, "m2_head_dim=48 must divide expand*d_model=128"),
    ("R", {"lru_width": 66, "n_heads": 4}, "n_heads=4 must divide lru_width=66"),
    ("H", {"hyena_pos_dim": 4}, "hyena_pos_dim=4 must be odd and >= 3"),
    ("H", {"hyena_order": 1}, "hyena_order=1 must be an integer >= 2"),
    ("A", {"d_model": 0}, "d_model=0 must be a positive integer"),
    ("A", {"d_model": 64.0}, "d_model=64.0 must be a positive integer"),
    ("A", {"norm_eps": -1.0}, "norm_eps=-1.0 must be a positive number"),
    ("A", {"window": 0}, "window=0 must be a positive integer"),
    ("A", {"ffn": "gelu"}, "ffn='gelu' must be one of mlp, moe, none"),
    ("A", {"heads": 4}, "unknown dim 'heads'"),
])
def test_invalid_configs_name_the_field_and_value(pattern, dims, message):
    with pytest.raises(ArchConfigError) as caught:
        ArchConfig.from_pattern(pattern, **dims)
    assert message in str(caught.value)


def test_layer_level_validation_names_the_index():
    with pytest.raises(ArchConfigError, match=r"layers\[1\]: local attention window 0 must be >= 1"):
        ArchConfig(layers=(Layer("A", None, "mlp"), Layer("L", 0, "mlp")))
    with pytest.raises(ArchConfigError, match=r"layers\[0\]: shared attention block id -1 must "
                                              r"be >= 0"):
        ArchConfig(layers=(Layer("S", -1, "none"),))
    with pytest.raises(ArchConfigError, match=r"layers\[0\]: mixer M takes no argument"):
        ArchConfig(layers=(Layer("M", 3, "mlp"),))
    with pytest.raises(ArchConfigError, match=r"layers\[0\]: unknown mixer 'X'"):
        ArchConfig(layers=(Layer("X", None, "mlp"),))
    with pytest.raises(ArchConfigError, match="at least one layer"):
        ArchConfig(layers=())


def test_widths_irrelevant_to_the_layers_are_not_checked():
    # three heads cannot split 64 channels, but a pure Mamba model has no heads
    assert ArchConfig.from_pattern("M*2", d_model=64, n_heads=3).depth == 2


def test_derived_widths_are_resolved_and_documented():
    arch = ArchConfig.from_pattern("A M", d_model=96, n_heads=6)
    assert arch.d_ff == 256  # ceil(8 * 96 / 3) = 256, a multiple of 8
    assert arch.n_kv_heads == 6
    assert arch.dt_rank == math.ceil(96 / 16) == 6
    assert arch.lru_width == 96
    explicit = ArchConfig.from_pattern("A M", d_model=96, n_heads=6, d_ff=256, n_kv_heads=6,
                                       dt_rank=6, lru_width=96)
    assert explicit == arch and explicit.fingerprint() == arch.fingerprint()


@pytest.mark.parametrize("name", arch_names())
def test_presets_round_trip_exactly_through_yaml_and_json(name):
    arch = load_arch(name)
    assert ArchConfig.from_yaml(arch.to_yaml()) == arch
    assert ArchConfig.from_json(arch.to_json()) == arch
    data = yaml.safe_load(arch.to_yaml())
    assert data["schema_version"] == 1 and data["pattern"] == arch.pattern


def test_round_trip_keeps_fields_no_layer_uses():
    arch = ArchConfig.from_pattern("M*3", n_heads=8, moe_experts=16, rope_theta=5e5)
    again = ArchConfig.from_json(arch.to_json())
    assert again == arch and again.n_heads == 8 and again.rope_theta == 5e5


def test_schema_version_and_malformed_documents():
    data = ArchConfig.from_pattern("A").to_dict()
    with pytest.raises(ArchConfigError, match="schema_version: 2 is not one this toolkit reads"):
        ArchConfig.from_dict({**data, "schema_version": 2})
    with pytest.raises(ArchConfigError, match="schema_version: missing"):
        ArchConfig.from_dict({k: v for k, v in data.items() if k != "schema_version"})
    with pytest.raises(ArchConfigError, match="pattern: missing"):
        ArchConfig.from_dict({"schema_version": 1})
    with pytest.raises(ArchConfigError, match="must be a mapping"):
        ArchConfig.from_yaml("- A\n- M\n")


def test_fingerprint_ignores_fields_that_no_layer_uses():
    a = ArchConfig.from_pattern("M*4", ffn="none", n_heads=2, d_ff=64, moe_experts=3)
    b = ArchConfig.from_pattern("M M M M", ffn="none")
    assert a != b
    assert a.canonical() == b.canonical()
    assert a.fingerprint() == b.fingerprint()


def test_fingerprint_tells_different_architectures_apart():
    base = ArchConfig.from_pattern("(M*3 A)*2")
    others = [
        ArchConfig.from_pattern("(M*3 L64)*2"),
        ArchConfig.from_pattern("(M*3 A)*2", d_model=64),
        ArchConfig.from_pattern("(M*3 A)*2", ffn="moe"),
        ArchConfig.from_pattern("(M*3 A)*2", d_state=8),
        ArchConfig.from_pattern("M*3 A A M*3"),
        ArchConfig.from_pattern("(M*3 A)*2", tie_embeddings=False),
    ]
    prints = {base.fingerprint()} | {o.fingerprint() for o in others}
    assert len(prints) == len(others) + 1


def test_local_attention_window_written_either_way_is_the_same_architecture():
    assert ArchConfig.from_pattern("L", window=128) == ArchConfig.from_pattern("L128")
    assert ArchConfig.from_pattern("S S0") == ArchConfig.from_pattern("S*2")


def test_config_is_frozen():
    arch = ArchConfig.from_pattern("A")
    with pytest.raises(Exception):
        arch.d_model = 5  # type: ignore[misc]


@given(pattern=st.sampled_from(["A*2", "(M*3 L)*2", "M2 R H", "S M S1", "(M M+moe)*2 A"]),
       d_model=st.sampled_from([32, 64, 96]), n_heads=st.sampled_from([1, 2, 4]),
       ffn=st.sampled_from(["mlp", "moe", "none"]), window=st.integers(1, 300),
       tie=st.booleans())
@settings(max_examples=60, deadline=None)
def test_any_valid_config_round_trips_through_json(pattern, d_model, n_heads, ffn, window, tie):
    arch = ArchConfig.from_pattern(pattern, d_model=d_model, n_heads=n_heads, ffn=ffn,
                                   window=window, tie_embeddings=tie, m2_head_dim=16)
    again = ArchConfig.from_dict(json.loads(json.dumps(arch.to_dict())))
    assert again == arch and again.fingerprint() == arch.fingerprint()


# -- a printed pattern means what it says --------------------------------------------------------


def _widths(arch: ArchConfig) -> dict:
    """Every field but the layers: what `from_pattern` takes besides the pattern."""
    data = arch.to_dict()
    del data["schema_version"], data["pattern"]
    return data


def _assert_pattern_says_it_all(arch: ArchConfig) -> None:
    assert ArchConfig.from_pattern(arch.pattern, **_widths(arch)) == arch
    assert ArchConfig.from_pattern(arch.pattern).layers == arch.layers


_mixer_layers = st.sampled_from(["A", "M", "M2", "R", "H"]).map(lambda m: Layer(m, None))
_layers = st.lists(
    st.tuples(st.one_of(_mixer_layers, st.integers(1, 512).map(lambda w: Layer("L", w)),
                        st.integers(0, 3).map(lambda i: Layer("S", i))),
              st.sampled_from(["mlp", "moe", "none"]))
    .map(lambda pair: Layer(pair[0].mixer, pair[0].arg if pair[0].mixer in "LS" else None,
                            pair[1])),
    min_size=1, max_size=40)


@given(layers=_layers, period=st.integers(1, 6))
@settings(max_examples=200, deadline=None)
def test_printed_pattern_rebuilds_the_architecture(layers, period):
    # periodic stacks, as real hybrids are, besides arbitrary ones
    arch = ArchConfig(layers=tuple(layers) * period, d_model=32, n_heads=4, m2_head_dim=16)
    _assert_pattern_says_it_all(arch)


@pytest.mark.parametrize("name", arch_names())
def test_every_preset_prints_a_pattern_that_rebuilds_it(name):
    _assert_pattern_says_it_all(load_arch(name))


def test_every_sampled_candidate_of_every_preset_space_prints_its_own_pattern():
    import optuna

    from search_spaces import load_space, space_names
    from search_spaces.space import InvalidCandidate

    for name in space_names():
        space = load_space(name)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(25):
            trial = study.ask()
            try:
                candidate = space.sample(trial)
            except InvalidCandidate:  # widths that do not fit: the space's own business
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
            _assert_pattern_says_it_all(candidate.arch)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
