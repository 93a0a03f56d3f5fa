"""The one error type the pattern language raises."""

from __future__ import annotations

from search_spaces.errors import UserError, shorten


class PatternError(UserError):
    """A pattern that cannot be read, with the 1-based column where reading stopped.

    `str(error)` reads like `col 9: expected a layer, '(' or '{' but found ')'`.
    """

    def __init__(self, message: str, col: int | None = None, text: str | None = None) -> None:
        self.message = message
        self.col = col
        self.text = text
        super().__init__(f"col {col}: {message}" if col is not None else message)

    def describe(self) -> str:
        """`pattern 'A*2 )': col 5: ...`: the pattern itself, shortened, then the problem."""
        return f"pattern {shorten(self.text)!r}: {self}" if self.text is not None else str(self)

    def caret(self) -> str:
        """The pattern with a caret under the column, for a terminal."""
        if self.text is None or self.col is None:
            return str(self)
        return f"{self.text}\n{' ' * (self.col - 1)}^ {self}"
