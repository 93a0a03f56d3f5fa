"""Shipped presets: concrete architectures (archs/) and search spaces (spaces/), by name or path.

Architectures are small-scale but faithful to each design's layer pattern (Jamba, Zamba,
Griffin, Hawk, StripedHyena, Transformer, Mamba, Mamba-2), so they train in seconds on a CPU;
the `*_full` ones (jamba, zamba2, recurrentgemma, nemotron_h, mamba) are published models at
their published sizes, imported from their config.json, for `hnas cost`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from search_spaces.arch import ArchConfig, ArchConfigError
from search_spaces.errors import shorten
from search_spaces.hf_import import from_hf
from search_spaces.pattern import PatternError
from search_spaces.space import SearchSpace, SpaceError
from search_spaces.yaml_input import is_file, load_yaml, read_text

PRESET_DIR = Path(__file__).parent


def arch_names() -> list[str]:
    return sorted(p.stem for p in (PRESET_DIR / "archs").glob("*.yaml"))


def space_names() -> list[str]:
    return sorted(p.stem for p in (PRESET_DIR / "spaces").glob("*.yaml"))


def _read(path: Path, what: str) -> str:
    return read_text(path, SpaceError, what)


def _hf_folder_config(path: Path) -> Path:
    """A Hugging Face model folder stands for its config.json."""
    return path / "config.json" if is_file(path / "config.json") else path


def is_arch_reference(name_or_path: str | Path) -> bool:
    """True for a preset architecture name, an existing file or a Hugging Face model folder
    (anything else is a pattern)."""
    return is_file(PRESET_DIR / "archs" / f"{name_or_path}.yaml") \
        or is_file(_hf_folder_config(Path(name_or_path)))


def load_arch(name_or_path: str | Path, **overrides: Any) -> ArchConfig:
    """A preset architecture by name (`jamba`), an ArchConfig YAML/JSON file by path, or a
    Hugging Face config.json (or the model folder holding it), imported with `from_hf`.

    `overrides` replace dims of the stored config before it is built, so widths derived by
    default (d_ff, dt_rank, ...) follow an overridden d_model unless the file fixes them."""
    preset = PRESET_DIR / "archs" / f"{name_or_path}.yaml"
    path = preset if is_file(preset) else _hf_folder_config(Path(name_or_path))
    if not is_file(path):
        raise SpaceError(f"{shorten(str(name_or_path))}: neither a preset architecture "
                         f"({', '.join(arch_names())}) nor a file")
    text = _read(path, "an architecture")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as error:
            reason = "nested too deep" if isinstance(error, RecursionError) else \
                str(error).splitlines()[0]
            raise SpaceError(f"{path}: not valid JSON ({reason})") from None
    else:
        data = load_yaml(text, str(path), SpaceError)
    if not isinstance(data, dict):
        raise SpaceError(f"{path}: an architecture file must be a mapping")
    try:
        if "schema_version" not in data and "model_type" in data:  # a Hugging Face config
            imported = from_hf(data).to_dict()
            return ArchConfig.from_dict({**imported, **overrides})
        return ArchConfig.from_dict({**data, **overrides})
    except (ArchConfigError, PatternError) as error:
        raise SpaceError(f"{path}: {error}") from None


def load_space(name_or_path: str | Path) -> SearchSpace:
    """A preset search space by name (`demo`), or a search-space YAML file by path."""
    preset = PRESET_DIR / "spaces" / f"{name_or_path}.yaml"
    path = preset if is_file(preset) else Path(name_or_path)
    if not is_file(path):
        raise SpaceError(f"{shorten(str(name_or_path))}: neither a preset space "
                         f"({', '.join(space_names())}) nor a file")
    return SearchSpace.from_yaml(_read(path, "a search space"), str(path))
