"""The package layering of DESIGN.md: imports only point down, search_spaces never needs torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "search_spaces": {"trials", "nas", "torch", "lightning", "sqlalchemy", "numpy"},
    "trials": {"nas"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_only_point_down(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_modules(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}")
    assert not offenders, offenders


def test_sampling_and_costing_run_without_torch():
    code = (
        "import sys, optuna\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "from search_spaces import load_space, load_arch\n"
        "from search_spaces.cost import estimate\n"
        "space = load_space('jamba_like')\n"
        "study = optuna.create_study()\n"
        "candidate = space.sample(study.ask())\n"
        "print(estimate(candidate.arch, context=4096).params > 0, load_arch('zamba').depth)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "14"]
