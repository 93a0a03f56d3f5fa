"""Search spaces: YAML validation, define-by-run sampling through Optuna, constraints, size."""

from __future__ import annotations

import optuna
import pytest

from search_spaces import SearchSpace, SpaceError, load_space, space_names
from search_spaces.space import parse_quantity

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space(pattern: str, dims: dict | None = None, constraints: dict | None = None) -> SearchSpace:
    return SearchSpace.from_dict({"pattern": pattern, "dims": dims or {},
                                  "constraints": constraints or {}})


def random_trials(space_: SearchSpace, n: int, seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        candidate = space_.sample(trial)
        study.tell(trial, 0.0)
        yield candidate, study.trials[-1]


# -- sampling ----------------------------------------------------------------------------------


def test_window_is_a_parameter_only_where_a_bare_local_attention_was_chosen():
    s = space("M {attn: A|L|L32}", {"window": [16, 64], "d_model": [32, 64]})
    seen = set()
    for candidate, frozen in random_trials(s, 40):
        attn = frozen.params["attn"]
        seen.add(attn)
        assert ("window" in frozen.params) == (attn == "L")
        if attn == "L":
            assert candidate.arch.layers[1].arg == frozen.params["window"]
        if attn == "L32":
            assert candidate.arch.layers[1].arg == 32
    assert seen == {"A", "L", "L32"}


def test_moe_and_mixer_widths_are_parameters_only_when_those_layers_exist():
    s = space("{x: M|A} {y: R|M+moe}", {"moe_experts": [4, 8], "d_state": [8, 16],
                                         "n_heads": [2, 4], "lru_width": [32, 64],
                                         "d_model": 64})
    for candidate, frozen in random_trials(s, 40, seed=3):
        kinds = candidate.arch.kinds
        assert ("moe_experts" in frozen.params) == ("moe" in kinds)
        assert ("d_state" in frozen.params) == ("M" in kinds)
        assert ("n_heads" in frozen.params) == bool(kinds & {"A", "R"})
        assert ("lru_width" in frozen.params) == ("R" in kinds)
        assert "d_model" not in frozen.params  # fixed dims are not parameters


def test_ffn_dim_is_asked_only_when_a_layer_has_no_suffix():
    s = space("{M+none|M}", {"ffn": ["mlp", "moe"]})
    for candidate, frozen in random_trials(s, 20, seed=1):
        assert ("ffn" in frozen.params) == (frozen.params["choice1"] == "M")


def test_unnamed_choices_in_a_repeat_are_separate_parameters_named_by_position():
    s = space("{M|A}*{depth: 2..4}")
    for candidate, frozen in random_trials(s, 10):
        depth = frozen.params["depth"]
        assert sorted(k for k in frozen.params if k != "depth") == [
            f"choice1[{i}]" for i in range(depth)]
        assert [l.mixer for l in candidate.arch.layers] == [
            frozen.params[f"choice1[{i}]"] for i in range(depth)]


def test_constraints_reach_optuna_through_set_constraint():
    s = space("A*{n: 1..8}", {"d_model": 64},
              {"max_params": "120K", "depth": [2, 6],
               "max_cache_bytes": {"limit": "64KiB", "context": 256, "dtype": "fp32"}})
    feasible = infeasible = 0
    for candidate, frozen in random_trials(s, 30):
        assert frozen.constraints == candidate.constraints
        assert set(candidate.constraints) == {"max_params", "depth", "max_cache_bytes"}
        depth = frozen.params["n"]
        assert candidate.constraints["depth"] == max(2 - depth, depth - 6)
        # each layer keeps K and V: 2 * 64 channels * 256 tokens * 4 bytes = 128 KiB
        assert candidate.constraints["max_cache_bytes"] == pytest.approx(depth * 2 - 1)
        assert candidate.feasible == all(v <= 0 for v in candidate.constraints.values())
        feasible += candidate.feasible
        infeasible += not candidate.feasible
    assert infeasible > 0


def test_attention_ratio_constraint():
    s = space("{M|A}*4", constraints={"attention_ratio": {"min": 0.25, "max": 0.5}})
    for candidate, _ in random_trials(s, 30):
        ratio = sum(l.mixer == "A" for l in candidate.arch.layers) / 4
        assert candidate.constraints["attention_ratio"] == pytest.approx(max(0.25 - ratio, ratio - 0.5))


def test_same_seed_same_samples():
    s = load_space("jamba_like")
    first = [c.arch.fingerprint() for c, _ in random_trials(s, 8, seed=7)]
    second = [c.arch.fingerprint() for c, _ in random_trials(s, 8, seed=7)]
    assert first == second and len(set(first)) > 1


def test_fixed_trial_replays_a_recorded_architecture():
    s = load_space("jamba_like")
    (candidate, frozen), = random_trials(s, 1, seed=11)
    replay = s.sample(optuna.trial.FixedTrial(frozen.params))
    assert replay.arch == candidate.arch


# -- size and enumeration ----------------------------------------------------------------------


@pytest.mark.parametrize("pattern, dims, size", [
    ("{M|A}*12", {}, 2 ** 12),
    ("({slot: M|A} M M M)*3", {}, 2),
    ("(M*{run: 3..7} {attn: A|L|S})*{blocks: 2..4}", {}, 5 * 3 * 3),
    ("{M|A}*{1..3}", {}, 2 + 4 + 8),
    ("{M|A}*{n: 1..3}", {}, 2 + 4 + 8),
    ("{A|L}", {"window": [8, 16, 32]}, 1 + 3),
    ("{M|M+moe}", {"moe_experts": [4, 8], "moe_top_k": [1, 2]}, 1 + 4),
    ("{A|{w: L8|L16}} {w: L8|L16}", {}, 2 * 2),
    ("{A|{w: L8|L16}} {M|{w: L8|L16}}", {}, 1 + 2 + 2 + 2),
    ("{A|{w: L8|L16}} M", {}, 3),
    ("M", {"d_model": [32, 64], "n_heads": [2, 4]}, 2),
])
def test_size_counts_distinct_parameter_assignments(pattern, dims, size):
    s = space(pattern, dims)
    assert s.size() == size
    assert len(list(s.enumerate())) == size


@pytest.mark.parametrize("name", space_names())
def test_preset_spaces_load_and_sample(name):
    s = load_space(name)
    for candidate, _ in random_trials(s, 5):
        assert candidate.arch.depth >= 1
    assert s.size() is None or s.size() > 1


def test_enumeration_matches_size_on_the_preset_spaces_and_every_assignment_is_distinct():
    for name in ("demo", "jamba_like"):
        s = load_space(name)
        assignments = list(s.enumerate())
        assert len(assignments) == s.size()
        assert len({tuple(sorted(a.items())) for a in assignments}) == len(assignments)


def test_enumerated_assignments_replay_through_enqueue_trial():
    s = load_space("demo")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    assignments = list(s.enumerate())
    for params in assignments:
        study.enqueue_trial(params)
    archs = set()
    for params in assignments:
        trial = study.ask()
        archs.add(s.sample(trial).arch.fingerprint())
        assert trial.params == params
        study.tell(trial, 0.0)
    assert len(archs) == len(assignments)


def test_continuous_dims_have_no_size_and_cannot_be_enumerated():
    s = space("A", {"rope_theta": {"float": [1e3, 1e6], "log": True}})
    assert s.size() is None
    with pytest.raises(SpaceError, match="continuous"):
        list(s.enumerate())
    stepped = space("A", {"rope_theta": {"float": [1000, 3000], "step": 1000}})
    assert stepped.size() == 3 and len(list(stepped.enumerate())) == 3


def test_enumeration_refuses_spaces_above_the_limit():
    with pytest.raises(SpaceError, match="4096 assignments, more than the limit of 100"):
        list(space("{M|A}*12").enumerate(limit=100))


# -- malformed spaces --------------------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("pattern: [A]", "pattern: missing or not a string"),
    ("dims: {d_model: 64}", "pattern: missing or not a string"),
    ("pattern: A\nwidths: {}", "widths: unknown key"),
    ("pattern: '(M A'", "pattern: col 5: expected ')'"),
    ("pattern: A\ndims: {d_modle: 64}", "dims.d_modle: unknown dim (did you mean 'd_model'?)"),
    ("pattern: A\ndims: {d_model: -4}", "dims.d_model: expected a positive integer, got -4"),
    ("pattern: A\ndims: {d_model: []}", "dims.d_model: an empty list leaves nothing to choose"),
    ("pattern: A\ndims: {d_model: [64, 64]}", "dims.d_model: the list [64, 64] repeats a value"),
    ("pattern: A\ndims: {d_model: {int: [64]}}", "dims.d_model.int: expected [low, high]"),
    ("pattern: A\ndims: {d_model: {int: [128, 64]}}", "dims.d_model.int: empty range 128..64"),
    ("pattern: A\ndims: {d_model: {int: [64, 128], stp: 2}}", "dims.d_model: unknown key 'stp'"),
    ("pattern: A\ndims: {d_model: {float: [1, 2]}}", "dims.d_model: a float range only fits"),
    ("pattern: A\ndims: {ffn: [mlp, gelu]}", "dims.ffn: 'gelu' is not an FFN kind"),
    ("pattern: A\ndims: {tie_embeddings: 1}", "dims.tie_embeddings: expected true or false"),
    ("pattern: A\nconstraints: {max_parms: 5M}", "constraints.max_parms: Extra inputs are not permitted"),
    ("pattern: A\nconstraints: {max_params: lots}", "constraints.max_params: Value error, expected a number like 5M"),
    ("pattern: A\nconstraints: {max_cache_bytes: {limit: 1M, context: 8K, dtype: int4}}",
     "constraints.max_cache_bytes.dtype: Value error, unknown dtype 'int4'"),
    ("pattern: A\nconstraints: {depth: [8, 2]}", "constraints.depth: Value error, empty range [8, 2]"),
    ("pattern: 'A*{2..4}'\nconstraints: {depth: [10, 20]}",
     "constraints.depth: [10, 20] cannot be met; the pattern has 2..4 layers"),
    ("pattern: A\ndims: {d_model: [64, 96], n_heads: [4, 5]}",
     "dims: n_heads=5 must divide d_model=64 (the space allows d_model=64, n_heads=5)"),
    ("pattern: '{x: A|M}'\ndims: {x: 3}", "dims.x: unknown dim"),
    ("pattern: 'M+moe'\ndims: {moe_experts: [2, 4], moe_top_k: 3}", "dims: moe_top_k=3 must be at most moe_experts=2"),
    ("pattern: A\n  bad: [", "space: not valid YAML"),
    ("- A", "space: a search space must be a mapping"),
])
def test_malformed_space_files_name_the_key(text, message):
    with pytest.raises(SpaceError) as caught:
        SearchSpace.from_yaml(text)
    assert str(caught.value).startswith(message), str(caught.value)


def test_name_used_by_pattern_and_dims_is_refused():
    with pytest.raises(SpaceError, match="'window' is both a pattern decision and a dim"):
        space("{window: A|M}", {"window": [8, 16]})


def test_invalid_combination_of_dims_only_matters_if_the_layers_can_use_it():
    # n_heads=5 cannot split 64 channels, but this space never builds attention
    assert space("M*2", {"d_model": [64, 80], "n_heads": [4, 5]}).size() == 2


def test_missing_files_and_unknown_presets():
    with pytest.raises(SpaceError, match="nope: neither a preset space"):
        load_space("nope")


# -- identity and serialisation ----------------------------------------------------------------


def test_space_fingerprint_follows_content_not_spelling():
    a = SearchSpace.from_yaml("name: a\npattern: '(M*{run: 3..7}  {attn: A|L})*2'\n"
                              "dims: {d_model: [64, 128]}")
    b = SearchSpace.from_yaml("name: b\npattern: '(M*{run: 3..7} {attn: A|L})*2'\n"
                              "dims: {d_model: [64, 128]}")
    c = SearchSpace.from_yaml("pattern: '(M*{run: 3..7} {attn: A|L})*2'\ndims: {d_model: [64, 96]}")
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@pytest.mark.parametrize("name", space_names())
def test_spaces_round_trip_through_their_yaml(name):
    s = load_space(name)
    again = SearchSpace.from_yaml(s.to_yaml())
    assert again.fingerprint() == s.fingerprint() and again.size() == s.size()


@pytest.mark.parametrize("text, value", [
    ("5M", 5_000_000), ("1.5e6", 1_500_000), ("64MiB", 64 * 2**20), ("2K", 2000),
    (300, 300), ("8GB", 8 * 10**9), ("1 GiB", 2**30),
])
def test_quantities(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad", ["5X", "-1", True, "", "M5"])
def test_bad_quantities(bad):
    with pytest.raises(ValueError):
        parse_quantity(bad)


def test_mlp_options_are_searchable_and_asked_only_where_an_mlp_exists():
    from search_spaces.space.enumerate import enumerate_params

    s = SearchSpace.from_yaml(
        'pattern: "{M|A}*2"\n'
        "dims: {d_model: 32, n_heads: 4, moe_experts: 2, ffn: [mlp, moe, none],\n"
        "       ffn_act: [silu, relu2], ffn_gated: [true, false], rope_fraction: [0.0, 0.5]}\n",
        "options")
    every = list(enumerate_params(s, 1000))
    assert s.size() == len(every) == 9 + 3 * 2 * 9  # M M; then 3 stacks with A, 2 rotary
    for params in every:
        assert ("ffn_act" in params) == (params["ffn"] != "none")
        assert ("rope_fraction" in params) == ("A" in (params["choice1[0]"],
                                                       params["choice1[1]"]))
    with pytest.raises(SpaceError, match="dims.ffn_act: 'tanh' is not an activation"):
        SearchSpace.from_yaml('pattern: "A"\ndims: {ffn_act: [silu, tanh]}', "bad")


def test_cache_limit_can_count_recurrent_states_in_fp32():
    from search_spaces import ArchConfig
    from search_spaces.cost import estimate
    from search_spaces.space import Constraints

    arch = ArchConfig.from_pattern("M*4 A", d_model=64)
    limit = estimate(arch, context=1024).cache_bytes  # everything in bf16: exactly at the limit
    within = Constraints(max_cache_bytes={"limit": limit, "context": 1024})
    fp32 = Constraints(max_cache_bytes={"limit": limit, "context": 1024, "state_dtype": "fp32"})
    assert within.evaluate(arch)["max_cache_bytes"] == 0.0
    assert fp32.evaluate(arch)["max_cache_bytes"] > 0
    assert fp32.to_yaml()["max_cache_bytes"]["state_dtype"] == "fp32"
    assert "state_dtype" not in within.to_yaml()["max_cache_bytes"]
