"""The `hnas` command line. Each command lives in its own module; heavy imports stay inside
the commands so that `hnas --help` and `hnas cost` answer at once."""

from nas.cli.app import app

__all__ = ["app"]
