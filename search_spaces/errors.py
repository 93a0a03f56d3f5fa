"""The base of every input error the toolkit raises: one class, no imports.

Every package's errors about what a user gave (a pattern, a space, a config, a suite, a task
setting, a budget, a study definition, a storage URL, an export) derive from `UserError`, so
the command line catches them in one place and prints `error: <describe()>` on one line, with
exit code 2 and no traceback. Anything else is a bug and keeps its traceback.

This module imports nothing, so that `trials` and `nas` can derive from it without loading
torch or Optuna, and the CLI can name it before any of them is loaded.
"""

from __future__ import annotations


class UserError(ValueError):
    """An input that cannot be used; the message names the field, the index and the value."""

    def describe(self) -> str:
        """The one line the command line prints after `error: `."""
        return str(self)


def shorten(text: str, limit: int = 120) -> str:
    """User text (a path, a pattern) for a one-line message: cut in the middle when long."""
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2]} ...({len(text):,} characters)... {text[-limit // 3:]}"
