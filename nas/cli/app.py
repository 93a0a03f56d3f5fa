"""The typer application and its sub-command groups."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="hnas",
    help="Neural architecture search over hybrid sequence models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
space_app = typer.Typer(help="Inspect and sample search spaces.", no_args_is_help=True)
app.add_typer(space_app, name="space")
study_app = typer.Typer(help="Manage study databases.", no_args_is_help=True)
app.add_typer(study_app, name="study")

# Registering the commands: each module adds its own to `app`, `space_app` or `study_app`.
from nas.cli import cost as _cost  # noqa: E402,F401
from nas.cli import fidelity as _fidelity  # noqa: E402,F401
from nas.cli import hf_import as _hf_import  # noqa: E402,F401
from nas.cli import results as _results  # noqa: E402,F401
from nas.cli import search as _search  # noqa: E402,F401
from nas.cli import space as _space  # noqa: E402,F401
from nas.cli import studies as _studies  # noqa: E402,F401
from nas.cli import train as _train  # noqa: E402,F401
