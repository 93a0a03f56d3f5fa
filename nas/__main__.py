"""`python -m nas` runs the `hnas` command line."""

from nas.cli import app

app(prog_name="hnas")
