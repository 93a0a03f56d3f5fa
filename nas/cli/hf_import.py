"""`hnas import`: a Hugging Face config.json as one of our architecture files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from nas.cli.common import fail


def import_config(
    source: Path = typer.Argument(..., metavar="HF_CONFIG_JSON_OR_DIR",
                                  help="A config.json, or a model folder holding one."),
    out: Optional[Path] = typer.Option(None, "--out", "-o",
                                       help="Write the architecture here (.yaml or .json) "
                                            "instead of printing it."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML."),
) -> None:
    """Import a Hugging Face config (Jamba, NemotronH, Zamba2, RecurrentGemma, Mamba, Mamba2,
    Llama, Mistral, Mixtral) as an ArchConfig that `hnas cost`, `hnas train` and `hnas export`
    read. A config with fields that no ArchConfig represents is refused with every such
    field named.

    Example: `hnas import ~/models/Jamba-v0.1 -o jamba.yaml`, then `hnas cost jamba.yaml`.
    """
    # not at --help (see nas.cli)
    from search_spaces.hf_families import HFConfigError
    from search_spaces.hf_import import family_of, from_hf

    path = source / "config.json" if source.is_dir() else source
    if not path.is_file():
        fail(f"{source}: neither a config.json nor a folder holding one")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        fail(f"{path}: not a readable JSON file ({str(error).splitlines()[0]})")
    if not isinstance(data, dict):
        fail(f"{path}: a config.json must be a JSON object")
    try:
        arch = from_hf(data)
    except HFConfigError as error:
        fail(f"{path}: {error}")
    header = f"# imported from {path} ({family_of(data).config_class}) by hnas import\n"
    if out is not None:
        if out.suffix not in (".yaml", ".yml", ".json"):
            fail(f"--out {out}: expected a .yaml or .json file name")
        text = arch.to_json() + "\n" if out.suffix == ".json" else header + arch.to_yaml()
        out.write_text(text)
        typer.echo(f"{arch.pattern}  ->  {out}")
        return
    typer.echo(arch.to_json() if as_json else header + arch.to_yaml().rstrip("\n"))
