"""Reading user YAML files: one-line errors that name the file (and line) and never a traceback.

Shared by every loader that takes a user's file (search spaces here, task suites in trials), each
raising its own error type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def read_text(path: str | Path, error: type[Exception], what: str = "") -> str:
    path = Path(path)
    try:
        return path.read_text()
    except OSError as problem:
        raise error(f"{path}: cannot read{' ' + what if what else ''} "
                    f"({problem.strerror})") from None


def load_yaml(text: str, source: str, error: type[Exception]) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as problem:
        mark = getattr(problem, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise error(f"{source}: not valid YAML{where}: "
                    f"{getattr(problem, 'problem', problem)}") from None
