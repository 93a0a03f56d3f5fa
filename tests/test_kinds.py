"""The layer and FFN kinds are one record each (search_spaces.layers): every per-kind table in
the toolkit covers exactly those kinds, so adding a kind cannot be half done."""

from __future__ import annotations

import pytest

from search_spaces import ArchConfig
from search_spaces.arch import field_names
from search_spaces.cost import FFN_COSTS, MIXER_COSTS
from search_spaces.hf_families import FAMILIES
from search_spaces.hf_import import READERS
from search_spaces.layers import (
    ATTENTION_MIXERS,
    FFN_KINDS,
    FFNS,
    MIXER_KINDS,
    MIXERS,
    MIXERS_WITH_ARG,
    NO_FFN,
)
from search_spaces.pattern import parse


def test_every_kind_has_a_cost_a_module_and_fields_that_exist():
    from trials.builder import ffn_kwargs, mixer_kwargs
    from trials.ffn import FFNS as FFN_MODULES
    from trials.mixers import MIXERS as MIXER_MODULES

    assert set(MIXER_COSTS) == set(MIXER_MODULES) == set(MIXERS)
    assert set(FFN_COSTS) == set(FFN_MODULES) == set(FFNS) - {NO_FFN}
    for kind in (*MIXER_KINDS, *FFN_KINDS):
        assert set(kind.fields) <= set(field_names()), kind
    arch = ArchConfig.from_pattern("A L8 M M2 R H S+moe", d_model=32, m2_head_dim=16)
    for layer in arch.layers:
        if layer.mixer != "S":  # S wraps a shared block: built by build_model itself
            MIXER_MODULES[layer.mixer](**mixer_kwargs(arch, layer))
    for ffn in set(FFNS) - {NO_FFN}:
        FFN_MODULES[ffn](**ffn_kwargs(arch, ffn))


def test_the_parser_reads_every_kind_the_records_name():
    for kind in MIXER_KINDS:
        text = kind.symbol + ("7" if kind.arg else "")
        for ffn in FFNS:
            (token,) = parse(f"{text}+{ffn}").items
            assert (token.layer.mixer, token.layer.ffn) == (kind.symbol, ffn)
            assert (token.layer.arg is not None) == (kind.symbol in MIXERS_WITH_ARG)
    assert set(ATTENTION_MIXERS) == {"A", "L", "S"}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_has_a_reader_a_writer_and_known_fields(family):
    from nas.export.hf import _SPECS

    spec = FAMILIES[family]
    assert family in READERS and family in _SPECS
    for link in spec.links:
        assert set(link.ours) <= set(field_names()), link
        assert link.kinds <= set(MIXERS) | set(FFNS), link
    assert set(spec.needs) <= set(field_names())
