"""Reading user YAML files: one-line errors that name the file (and line) and never a traceback.

Shared by every loader that takes a user's file (search spaces, architectures, task suites),
each raising its own error type. What is read is bounded, because a file is input from anyone:

- at most `MAX_FILE_BYTES` of UTF-8 text (a BOM is allowed; other encodings are refused by name);
- nesting at most `MAX_NESTING` deep (PyYAML composes recursively: 20,000 levels would blow
  Python's stack);
- at most `MAX_NODES` values once anchors and aliases are expanded (a "billion laughs" document
  is a few hundred bytes that expand to 10^9 strings; building it is cheap in PyYAML, since an
  alias is the same object, but everything that walks or prints it afterwards is not).

Numbers follow YAML 1.2, as users expect from JSON and every other modern reader: `1e3` is the
float 1000.0 (PyYAML's YAML 1.1 reads it as the string '1e3' because it has no dot).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from search_spaces.errors import UserError, shorten

MAX_FILE_BYTES = 1 << 20  # 1 MiB: the largest shipped space or suite is under 2 KiB
MAX_NESTING = 64
MAX_NODES = 100_000

# YAML 1.2's float forms that YAML 1.1 lacks: an exponent without a dot (1e3, -2E-5, 7e+2).
_FLOAT_12 = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class InputTooLarge(UserError):
    """A document that is nested too deep or expands to too many values."""


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 exponent floats and limits on nesting and expansion."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                mark = self.peek_event().start_mark
                raise InputTooLarge(f"nested deeper than {MAX_NESTING} levels "
                                    f"(line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self):
        node = super().compose_document()
        _check_expansion(node)
        return node


BoundedLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789"))


def _check_expansion(root: yaml.Node | None) -> None:
    """Refuse a document whose aliases expand past MAX_NODES values, or refer to themselves.

    Each distinct node is sized once (aliases share nodes), so this is linear in the file."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise InputTooLarge("an alias refers to the value that contains it")
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        open_nodes.discard(key)
        if total > MAX_NODES:
            raise InputTooLarge(f"expands to more than {MAX_NODES:,} values (anchors and "
                                "aliases count once per use)")
        sizes[key] = total
        return total

    if root is not None:
        size(root)


def is_file(path: str | Path) -> bool:
    """Path.is_file() that answers False, rather than raising, for names no file can have (over
    the file system's length limit, or containing a NUL byte): a pattern is not a path."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def read_text(path: str | Path, error: type[Exception], what: str = "") -> str:
    """The file's text: at most MAX_FILE_BYTES of UTF-8, else `error` naming the file."""
    path = Path(path)
    kind = f" {what}" if what else ""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as problem:
        raise error(f"{shorten(str(path))}: cannot read{kind} ({problem.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise error(f"{shorten(str(path))}: larger than {MAX_FILE_BYTES >> 20} MiB; "
                    f"not{kind or ' a'} file this toolkit reads")
    return decode(data, str(shorten(str(path))), error)


def decode(data: bytes, source: str, error: type[Exception]) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        hint = " (UTF-16?)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise error(f"{source}: not UTF-8 text{hint}: byte 0x{data[problem.start]:02x} at "
                    f"offset {problem.start}") from None


def load_yaml(text: str, source: str, error: type[Exception]) -> Any:
    """The YAML document in `text`, within the limits above; `error` naming `source` if not."""
    try:
        return yaml.load(text, Loader=BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise error(f"{source}: not valid YAML{where}: "
                    f"{getattr(problem, 'problem', problem)}") from None
    except InputTooLarge as problem:
        raise error(f"{source}: {problem}") from None


