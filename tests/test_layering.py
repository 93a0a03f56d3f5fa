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


def module_graph(package: str) -> dict[str, set[str]]:
    """Which modules of `package` each of its modules imports, at any depth in the file (a
    function-local import is an edge too), `from . import x` and `from pkg import module`
    included; imports under `if TYPE_CHECKING:` count as well."""
    modules = {}
    for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                # the module itself, or the deepest package of ours that holds it
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as the list of modules around it; None when it has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


@pytest.mark.parametrize("package", ["nas.cli", "search_spaces"])
def test_the_package_imports_one_way(package):
    """No import cycle among the modules of the command line, nor of search_spaces (a
    package's `__init__` importing its own modules is not a cycle; a module importing its
    package's `__init__` back is)."""
    graph = module_graph(package)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_command_modules_import_no_other_command_module():
    """`nas.cli.app` -> command modules -> `common` (and the search's `progress`), one way, as
    `nas.cli.app` says: what two commands share lives in `common`."""
    from nas.cli.app import COMMANDS

    commands = {function.__module__ for _, _, function in COMMANDS}
    graph = module_graph("nas.cli")
    offenders = {name: sorted(graph[name] & commands) for name in commands
                 if graph[name] & commands}
    assert not offenders, offenders
