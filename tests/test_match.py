"""Finding the parameters with which a space samples a given architecture (baselines)."""

from __future__ import annotations

from optuna.trial import FixedTrial

from search_spaces import ArchConfig, SearchSpace, load_arch
from search_spaces.space.match import params_for


def space(text: str) -> SearchSpace:
    return SearchSpace.from_yaml(text)


def replayed(s: SearchSpace, params: dict) -> ArchConfig:
    return s.sample(FixedTrial(params)).arch


def test_named_decisions_repeats_and_window_are_recovered():
    s = space('pattern: "(M*{run: 1..3} {attn: A|L})*{blocks: 1..3}"\n'
              'dims: {window: [16, 32], d_model: [32, 64]}')
    target = ArchConfig.from_pattern("M M L32 M M L32", d_model=64)
    match = params_for(s, target)
    assert match.params == {"blocks": 2, "run": 2, "attn": "L", "window": 32, "d_model": 64}
    assert replayed(s, match.params).layers == target.layers and match.adjusted == {}
    # A named decision is one value everywhere: runs of 2 then 1 cannot come from `run`.
    assert params_for(s, ArchConfig.from_pattern("M M L32 M L32", d_model=64)) is None
    # One `window` dim: two different bare-L windows cannot both come from it.
    assert params_for(s, ArchConfig.from_pattern("M L16 M L32", d_model=64)) is None


def test_unnamed_choices_per_repetition_and_ffn_suffixes():
    s = space('pattern: "{A|M|R}*{depth: 2..4}"\ndims: {ffn: [mlp, none]}')
    # Every layer without a suffix takes the one `ffn` dim, so mixed FFNs do not fit.
    assert params_for(s, ArchConfig.from_pattern("R M+none A", ffn="mlp")) is None
    target = ArchConfig.from_pattern("R M A", ffn="none")
    match = params_for(s, target)
    assert match.params == {"depth": 3, "choice1[0]": "R", "choice1[1]": "M",
                            "choice1[2]": "A", "ffn": "none"}
    assert replayed(s, match.params).layers == target.layers


def test_widths_outside_the_space_take_the_nearest_allowed_value():
    s = space('pattern: "{A|M|R|L}*{depth: 2..6}"\n'
              'dims: {d_model: [48, 128], d_state: {int: [4, 12], step: 4}, window: [64, 128]}')
    griffin = load_arch("griffin")
    match = params_for(s, griffin)
    assert match.arch.layers == griffin.layers
    assert match.params["d_model"] == 48 and match.adjusted["d_model"] == (64, 48)
    mamba = load_arch("mamba")  # 8 layers: more than the space's depth allows
    assert params_for(s, mamba) is None
    small = ArchConfig.from_pattern("M M", d_model=48, d_state=16)
    match = params_for(s, small)
    assert match.params["d_state"] == 12 and match.adjusted == {"d_state": (16, 12)}


def test_layer_kinds_the_pattern_cannot_produce_do_not_match():
    s = space('pattern: "(M*3 A)*2"')
    assert params_for(s, ArchConfig.from_pattern("M M M A M M M A")) is not None
    assert params_for(s, ArchConfig.from_pattern("M M M L64 M M M A")) is None
    assert params_for(s, ArchConfig.from_pattern("M M M A M M M")) is None
