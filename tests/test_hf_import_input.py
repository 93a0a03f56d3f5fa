"""Hostile or incomplete config.json files: every missing or wrongly typed field of every
family is one HFConfigError naming the field (the CLI: one line naming the file, exit 2),
never a KeyError or TypeError from inside a family's conversions. Pure Python: no
transformers needed, unlike tests/test_hf_import.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nas.cli import app
from search_spaces import from_hf
from search_spaces.hf_families import FAMILIES, GENERIC_IGNORED, HFConfigError

DATA = Path(__file__).parent / "data" / "hf"
#: one published config per family
PUBLISHED = {json.loads(path.read_text())["model_type"]: json.loads(path.read_text())
             for path in sorted(DATA.glob("*.json"))}
#: values of the wrong type or range for any field a family reads
WRONG = [None, "x", [1], {"a": 1}, [[1]], -1, 0, 1.5, True]


def refusal(data: dict) -> str:
    with pytest.raises(HFConfigError) as caught:
        from_hf(data)
    return str(caught.value)


def test_every_family_has_a_published_config_here():
    assert set(PUBLISHED) == set(FAMILIES)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_a_config_with_only_its_model_type_names_the_missing_fields(model_type):
    message = refusal({"model_type": model_type})
    assert message.startswith(f"{FAMILIES[model_type].config_class} cannot be represented: ")
    for key in ("vocab_size", "hidden_size"):
        assert f"{key}: missing" in message


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_each_missing_field_is_refused_by_name_or_takes_its_default(model_type):
    published = PUBLISHED[model_type]
    for key in sorted(set(published) - {"model_type"}):
        data = {name: value for name, value in published.items() if name != key}
        try:
            from_hf(data)
        except HFConfigError as error:
            assert key in str(error), (key, str(error))


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_each_wrongly_typed_field_is_refused_by_name(model_type):
    """Every key the family reads (not the ones it passes over), set to each wrong value in
    turn: an HFConfigError that names the key, or an import (a value the key may take)."""
    family = FAMILIES[model_type]
    for key in sorted(family.known_keys() - GENERIC_IGNORED - family.ignored):
        for value in WRONG:
            try:
                from_hf({**PUBLISHED[model_type], key: value})
            except HFConfigError as error:
                assert key in str(error), (key, value, str(error))


@pytest.mark.parametrize("model_type", [[1], {"a": 1}, None, 7])
def test_a_model_type_that_is_no_string_is_refused(model_type):
    assert "not a family this toolkit imports" in refusal({"model_type": model_type})


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_cli_import_of_an_incomplete_config_is_one_line_naming_file_and_field(tmp_path,
                                                                              model_type):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": model_type}))
    result = CliRunner().invoke(app, ["import", str(path)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith(f"error: {path}: ") and "hidden_size: missing" in lines[0]


@pytest.mark.parametrize("model_type", ["llama", "mistral", "mixtral"])
def test_a_partial_rotary_factor_llama_cannot_build_is_refused(model_type):
    """Llama's attention rotates whole heads, so a factor other than 1 (top level or in
    rope_parameters) describes no model it builds; 1 is accepted as the default is."""
    published = PUBLISHED[model_type]
    assert from_hf({**published, "partial_rotary_factor": 1.0}) == from_hf(published)
    assert "partial_rotary_factor=0.5: this family rotates whole heads" in refusal(
        {**published, "partial_rotary_factor": 0.5})
    inside = {**published,
              "rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.25}}
    assert "partial_rotary_factor=0.25" in refusal(inside)


def test_a_nemotron_h_layer_count_that_disagrees_with_its_pattern_is_refused():
    published = PUBLISHED["nemotron_h"]
    key = "layers_block_type" if published.get("layers_block_type") else "hybrid_override_pattern"
    entries = len(published[key])
    assert from_hf({**published, "num_hidden_layers": entries}) == from_hf(published)
    assert f"num_hidden_layers={entries + 1}: {key} has {entries} entries" in refusal(
        {**published, "num_hidden_layers": entries + 1})
