"""A name -> class table whose lookup error lists the valid names (mixers, FFNs)."""

from __future__ import annotations


class Registry(dict):
    """A dict whose lookup error names what was asked and lists the valid keys."""

    def __init__(self, what: str, entries: dict) -> None:
        super().__init__(entries)
        self.what = what

    def __missing__(self, key):
        raise KeyError(f"unknown {self.what} {key!r}; valid: {', '.join(self)}")
