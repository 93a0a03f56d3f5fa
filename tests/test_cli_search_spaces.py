"""`hnas cost`, `hnas space check`, `hnas space sample`: output and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nas.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_cost_reproduces_transformer_vs_hybrid_cache_at_8k():
    result = run("cost", "A*24", "(M*7 A)*3", "--d-model", "2048", "--context", "8192", "--json")
    assert result.exit_code == 0, result.output
    transformer, hybrid = json.loads(result.output)
    kv = lambda row: row["breakdown"]["A"]["cache_bytes"]  # noqa: E731
    assert kv(hybrid) * 8 == kv(transformer)
    # 24 layers * 2 (K, V) * 2048 channels * 8192 tokens * 2 bytes
    assert kv(transformer) == 24 * 2 * 2048 * 8192 * 2
    mamba_state = hybrid["breakdown"]["M"]["cache_bytes"]
    assert hybrid["cache_bytes"] == kv(hybrid) + mamba_state and mamba_state > 0
    assert hybrid["pattern"] == "(M*7 A)*3"


@pytest.mark.parametrize("pattern, dims, printed", [
    ("(A+moe)*32", [], "A+moe*32"),
    ("(M*6 S)*13", ["--dim", "ffn=none"], "(M*6 S)+none*13"),
])
def test_cost_json_pattern_rebuilds_the_same_architecture(pattern, dims, printed):
    first = json.loads(run("cost", pattern, "--d-model", "64", *dims, "--json").output)
    assert first["pattern"] == printed
    again = json.loads(run("cost", printed, "--d-model", "64", "--json").output)
    assert (again["params"], again["fingerprint"]) == (first["params"], first["fingerprint"])


def test_cost_table_shows_ratios_against_the_first_row():
    result = run("cost", "A*24", "(M*7 A)*3", "M*24", "--d-model", "2048")
    assert result.exit_code == 0, result.output
    assert "0.125x" in result.output  # the hybrid's KV cache, 3 attention layers out of 24
    assert "(M*7 A)*3" in result.output and "M*24" in result.output


def test_cost_breakdown_for_a_preset_and_dims():
    result = run("cost", "jamba", "--dim", "moe_experts=8", "--context", "1024")
    assert result.exit_code == 0, result.output
    for kind in ("embedding", "A", "M", "mlp", "moe", "norm", "total"):
        assert kind in result.output
    data = json.loads(run("cost", "zamba", "--d-model", "128", "--json").output)
    assert data["breakdown"]["S"]["count"] == 2 and "M" in data["breakdown"]


def test_cost_of_an_exported_config_file(tmp_path):
    from search_spaces import load_arch

    path = tmp_path / "griffin.json"
    path.write_text(load_arch("griffin").to_json())
    result = run("cost", str(path), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pattern"] == "(R*2 L128)*2"


def test_space_check_lists_parameters_and_size():
    result = run("space", "check", "jamba_like")
    assert result.exit_code == 0, result.output
    for name in ("blocks", "run", "attn", "window", "ffn", "d_model", "n_kv_heads", "d_state"):
        assert name in result.output
    assert "size: 960" in result.output
    free = run("space", "check", "free")
    assert "choice1[i]" in free.output and "one per repetition" in free.output


def test_space_sample_is_seeded_and_prints_canonical_patterns():
    first = run("space", "sample", "jamba_like", "-n", "4", "--seed", "3", "--json")
    second = run("space", "sample", "jamba_like", "-n", "4", "--seed", "3", "--json")
    assert first.exit_code == 0, first.output
    rows = [json.loads(line) for line in first.output.splitlines()]
    assert len(rows) == 4 and first.output == second.output
    for row in rows:
        assert row["arch"]["pattern"] == row["pattern"]
        assert set(row["constraints"]) == {"max_params", "max_cache_bytes"}
        assert row["cost"]["context"] == 131072  # the space's cache constraint context
    table = run("space", "sample", "demo", "-n", "3", "--seed", "0")
    assert table.exit_code == 0 and "feasible" in table.output


@pytest.mark.parametrize("args, message", [
    (["cost", "(M A"], "error: pattern '(M A': col 5: expected ')'"),
    (["cost", "A", "--dim", "n_heads=3"], "error: n_heads=3 must divide d_model=128"),
    (["cost", "A", "--dim", "heads"], "error: --dim 'heads': expected KEY=VALUE"),
    (["cost", "A", "--dtype", "int3"], "error: --dtype 'int3': valid dtypes are"),
    (["cost", "A", "--context", "0"], "error: --context 0: must be at least 1"),
    (["cost", "{A|M}"], "error: pattern '{A|M}': col 1: choice 'choice1' is open"),
    (["space", "check", "nope.yaml"], "error: nope.yaml: neither a preset space"),
    (["space", "sample", "demo", "-n", "0"], "error: -n 0: must be at least 1"),
])
def test_user_mistakes_are_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output


def test_malformed_space_file_through_the_cli(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("pattern: 'M*{run: 3..7} A'\ndims: {d_modle: 64}\n")
    result = run("space", "check", str(path))
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: dims.d_modle: unknown dim (did you mean 'd_model'?); valid dims: "
        + ", ".join(__import__("search_spaces.space", fromlist=["dim_names"]).dim_names()))


def test_console_script_exits_2_without_a_traceback():
    result = subprocess.run([sys.executable, "-m", "nas", "cost", "A*2 )"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: pattern 'A*2 )': col 5")


@pytest.mark.parametrize("args", [["--help"], ["cost", "A*2"], ["search", "--help"]])
def test_help_and_cost_do_not_import_torch_or_optuna(args):
    code = ("import sys; from typer.testing import CliRunner; from nas.cli import app; "
            f"r = CliRunner().invoke(app, {args!r}); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'optuna', 'lightning', 'sqlalchemy') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_every_input_error_is_a_user_error():
    """The CLI catches `UserError` in one place; each package's input errors derive from it,
    and its module imports nothing (trials and nas derive from it without loading torch)."""
    import ast

    from nas.dashboard import DashboardError
    from nas.definition import DefinitionChanged, DefinitionError
    from nas.export.configs import ExportError
    from nas.export.hf import HFExportError
    from nas.objectives import ObjectiveError
    from nas.plots import PlotError
    from nas.report import ReportError
    from nas.storage import StorageError
    from nas.study import SearchError
    from search_spaces import ArchConfigError, PatternError, SpaceError, UserError
    from search_spaces.hf_families import HFConfigError
    from search_spaces.yaml_input import InputTooLarge
    from trials import BudgetError, SuiteError, TaskError

    for error in (DashboardError, DefinitionChanged, DefinitionError, ExportError,
                  HFExportError, ObjectiveError, PlotError, ReportError, StorageError,
                  SearchError, ArchConfigError, PatternError, SpaceError, HFConfigError,
                  InputTooLarge, BudgetError, SuiteError, TaskError):
        assert issubclass(error, UserError), error
    source = Path(__import__("search_spaces.errors").errors.__file__).read_text()
    imports = [node for node in ast.walk(ast.parse(source))
               if isinstance(node, (ast.Import, ast.ImportFrom)) and node.module != "__future__"]
    assert imports == []
