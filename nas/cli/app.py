"""The typer application: every command registered here, in one place.

The command modules hold plain functions and import nothing of this module (nor of each
other's): `app` -> command modules -> `common`, one way. Each command is wrapped in
`common.user_errors`, the one place input errors become `error: ...` and exit code 2.
"""

from __future__ import annotations

import typer

from nas.cli import cost, fidelity, hf_import, results, search, space, studies, train
from nas.cli.common import user_errors

app = typer.Typer(
    name="hnas",
    help="Neural architecture search over hybrid sequence models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
space_app = typer.Typer(help="Inspect and sample search spaces.", no_args_is_help=True)
study_app = typer.Typer(help="Manage study databases.", no_args_is_help=True)

# (group, command name, function), in the order `hnas --help` lists them.
COMMANDS = (
    (app, "search", search.search),
    (app, "resume", search.resume),
    (app, "worker", search.worker),
    (app, "status", results.status),
    (app, "trials", results.trials),
    (app, "pareto", results.pareto),
    (app, "export", studies.export),
    (app, "studies", studies.studies),
    (app, "dashboard", studies.dashboard),
    (app, "fidelity", fidelity.fidelity),
    (app, "cost", cost.cost),
    (app, "train", train.train),
    (app, "import", hf_import.import_config),
    (space_app, "check", space.check),
    (space_app, "sample", space.sample),
    (study_app, "copy", studies.copy),
    (study_app, "prune-artifacts", studies.prune_artifacts),
)
for group, name, function in COMMANDS:
    group.command(name)(user_errors(function))
app.add_typer(space_app, name="space")
app.add_typer(study_app, name="study")
