"""The `hnas` command line: `app` registers the commands (`nas.cli.app`), one module per
group of commands, `common` for what they share.

Start-up: `hnas --help` imports every command module, so a command module imports at its top
only typer, rich, the standard library and torch-free, Optuna-free modules (`nas.cli.common`,
`nas.record`). search_spaces (YAML and pydantic, about 250 ms), Optuna with SQLAlchemy (about
400 ms) and torch (seconds) are imported inside the commands that use them, each such import
marked "not at --help". tests/test_cli_search_spaces.py holds `hnas --help` and `hnas cost` to
it.
"""

from nas.cli.app import app

__all__ = ["app"]
