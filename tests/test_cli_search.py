"""The study commands end to end through the CLI, with real (tiny) training on SQLite:
search, status, trials, pareto (with a plot), export, resume, train of an exported config,
study copy, and every user error as one line with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nas.cli import app
from search_spaces import ArchConfig

SPACE = """
name: tiny
pattern: "{A|M} {A|M|L}"
dims:
  d_model: [16, 32]
  n_heads: 2
  d_state: 4
  window: 8
  rope_fraction: 0.0        # as Jamba's attention and Mamba layers, so that
  mamba_inner_norms: true   # candidates without L export to JambaConfig exactly
"""
SUITE = """
name: tiny
tasks:
  - task: mqar
    n_train: 64
    n_test: 32
    settings: {seq_len: 32, num_kv_pairs: 2, vocab_size: 16}
"""
SEARCH = ["search", "space.yaml", "--study", "e2e", "--suite", "suite.yaml",
          "--objectives", "quality,params,cache@1024", "--budget-steps", "2",
          "--batch-size", "8", "--baselines", "transformer", "--quiet"]


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One study searched once for the module (training is the slow part)."""
    folder = tmp_path_factory.mktemp("e2e")
    (folder / "space.yaml").write_text(SPACE)
    (folder / "suite.yaml").write_text(SUITE)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        result = invoke(*SEARCH, "--n-trials", "3")
        assert result.exit_code == 0, result.output
        yield folder


def test_search_writes_the_default_sqlite_file(workdir):
    assert (workdir / "hnas.db").exists()
    result = invoke("status", "e2e", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    # three distinct architectures measured (a duplicate draw is recorded besides them)
    assert summary["counted"] == 3 <= summary["measured"] == summary["states"]["complete"]
    assert summary["n_trials"] == 3
    assert [o["name"] for o in summary["objectives"]] == ["quality", "params", "cache@1024"]
    # The transformer preset (A*6) does not fit a 2-layer space: skipped, not enqueued.
    assert summary["baselines"] == {}


def test_status_trials_and_pareto_tables(workdir):
    result = invoke("status", "e2e")
    assert result.exit_code == 0 and "3/3 architectures measured" in result.output
    assert "training: suite tiny, 2 steps per task, batch 8, lr 0.001" in result.output
    result = invoke("trials", "e2e", "--sort", "params", "--csv")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("trial,state,pattern,quality,params,cache@1024")
    params = [float(line.split(",")[4]) for line in lines[1:]]
    assert params == sorted(params) and len(params) >= 3
    result = invoke("pareto", "e2e", "--json", "--plot", "front.png")
    assert result.exit_code == 0, result.output
    front = json.loads(result.output[:result.output.rindex("]") + 1])
    assert front and all(row["state"] == "complete" for row in front)
    assert (workdir / "front.png").stat().st_size > 1000


def test_export_rebuilds_and_trains_the_same_architecture(workdir):
    result = invoke("export", "e2e", "--top", "1", "--by", "quality", "--format", "yaml",
                    "-o", "exported")
    assert result.exit_code == 0, result.output
    path = workdir / result.output.strip().splitlines()[0]
    arch = ArchConfig.from_yaml(path.read_text())
    trials = json.loads(invoke("trials", "e2e", "--sort", "quality", "--json").output)
    assert arch.pattern == trials[0]["pattern"]
    from trials.builder import build_model

    model = build_model(arch, seed=0)
    assert sum(p.numel() for p in model.parameters()) == trials[0]["params"]
    result = invoke("train", str(path), "--suite", "suite.yaml", "--steps", "2",
                    "--batch-size", "8", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["pattern"] == arch.pattern
    result = invoke("export", "e2e", "--pareto", "--format", "json", "-o", "exported")
    assert result.exit_code == 0
    for line in result.output.strip().splitlines():
        assert ArchConfig.from_json((workdir / line).read_text()).layers


def test_resume_adds_trials_to_the_same_study(workdir):
    result = invoke("resume", "e2e", "--n-trials", "4", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(invoke("status", "e2e", "--json").output)
    assert summary["counted"] == 4 and summary["n_trials"] == 4


def test_search_on_a_changed_definition_is_refused(workdir):
    changed = [*SEARCH[:SEARCH.index("--budget-steps") + 1], "3",
               *SEARCH[SEARCH.index("--budget-steps") + 2:]]
    result = invoke(*changed)
    assert result.exit_code == 2
    assert "different budget (steps 2 -> 3)" in result.output
    assert "--allow-changes" in result.output


def test_study_copy_and_listing(workdir):
    result = invoke("study", "copy", "--from", "sqlite:///hnas.db", "--to",
                    "sqlite:///copy.db")
    assert result.exit_code == 0, result.output
    result = invoke("studies", "--storage", "sqlite:///copy.db")
    assert result.exit_code == 0 and "e2e" in result.output
    again = invoke("study", "copy", "--from", "sqlite:///hnas.db", "--to", "sqlite:///copy.db")
    assert again.exit_code == 0 and "already copied e2e" in again.output  # resumable
    import optuna

    optuna.load_study(study_name="e2e", storage="sqlite:///copy.db").set_user_attr("n", 1)
    clash = invoke("study", "copy", "--from", "sqlite:///hnas.db", "--to", "sqlite:///copy.db")
    assert clash.exit_code == 2 and "already exists" in clash.output and "differs" in clash.output


@pytest.mark.parametrize("args, words", [
    (["search", "space.yaml", "--objectives", "quality,speed"], "unknown (valid: quality"),
    (["search", "space.yaml", "--sampler", "cmaes"], "sampler 'cmaes': unknown"),
    (["search", "space.yaml", "--storage", "mysql+nodriver://x/y"],
     "unknown database kind 'mysql+nodriver'"),
    (["search", "space.yaml", "--storage", "not a url"], "not an SQLAlchemy URL"),
    (["search", "space.yaml", "--baselines", "llama"], "--baselines: unknown preset 'llama'"),
    (["search", "nospace.yaml"], "nospace.yaml"),
    (["search", "space.yaml", "--suite", "huge"], "not a suite preset"),
    (["status", "missing"], "study 'missing' not found"),
    (["resume", "missing"], "study 'missing' not found"),
    (["worker", "--study", "missing"], "study 'missing' not found"),
    (["pareto", "e2e", "--plot", "front.svg"], "give a .png or .html file"),
    (["trials", "e2e", "--sort", "loss"], "not an objective of this study"),
    (["export", "e2e", "--trial", "99"], "trial 99 of study 'e2e' is not a complete trial"),
    (["export", "e2e", "--pareto", "--format", "onnx"], "--format 'onnx'"),
    (["export", "e2e", "--top", "2"], "--top needs --by"),
    (["status", "e2e", "--storage", "postgresql+psycopg://u@127.0.0.1:1/db"], "cannot connect"),
    (["status", "e2e", "--storage", "sqlite:///absent.db"], "no database file at 'absent.db'"),
    (["studies", "--storage", "sqlite:///absent.db"], "no database file at 'absent.db'"),
    (["status", "e2e", "--storage", "not a url"], "not an SQLAlchemy URL"),
    (["studies", "--storage", "not a url"], "not an SQLAlchemy URL"),
])
def test_user_errors_are_one_line_with_exit_code_2(workdir, args, words):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert words in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Traceback" not in result.output


def test_export_hf_configs_where_the_pattern_fits(workdir):
    transformers = pytest.importorskip("transformers")
    trials = json.loads(invoke("trials", "e2e", "--state", "complete", "--json").output)
    for row in trials:
        result = invoke("export", "e2e", "--trial", str(row["trial"]), "--format", "hf",
                        "-o", "hf")
        if "L" in row["pattern"]:  # local attention: only RecurrentGemma has it, with R layers
            assert result.exit_code == 2
            assert "local attention has no equivalent in JambaConfig" in result.output
            continue
        assert result.exit_code == 0, result.output
        for line in result.output.strip().splitlines():
            config = transformers.AutoConfig.from_pretrained(str((workdir / line).parent))
            assert config.model_type in ("jamba", "nemotron_h")
            assert config.hidden_size == json.loads(
                (workdir / line).read_text())["hidden_size"]


@pytest.mark.parametrize("flags, suite, steps, rates, schedule", [
    # the default suite at the budget its fidelity was measured at: constant after a warm-up
    ([], "recall64", 600, [3e-3], "constant"),
    (["--suite", "quick"], "quick", 100, [1e-3], "cosine"),
    (["--budget-steps", "50", "--lr", "1e-2"], "recall64", 50, [1e-2], "constant"),
    # successive halving continues from checkpoints: its own schedule, warm-up, decay per rung
    (["--fidelity", "sh", "--min-steps", "20", "--eta", "3"], "recall64", 600, [3e-3], "wsd"),
    (["--fidelity", "sh", "--rungs", "100,300,900"], "recall64", 900, [3e-3], "wsd"),
])
def test_search_defaults_follow_the_suite(tmp_path, monkeypatch, flags, suite, steps, rates,
                                          schedule):
    from nas.cli import search as search_command
    from trials import Budget

    seen = {}
    monkeypatch.setattr(search_command, "_run",
                        lambda name, url, storage, definition, *rest: seen.update(d=definition))
    result = CliRunner().invoke(app, ["search", "demo", "--storage",
                                      f"sqlite:///{tmp_path / 's.db'}", *flags])
    assert result.exit_code == 0, result.output
    budget = Budget.from_dict(seen["d"].budget)
    assert seen["d"].suite["name"] == suite
    assert budget.steps == steps and list(budget.rates) == pytest.approx(rates)
    assert budget.schedule == schedule
    if not flags:
        assert budget.warmup_length == 160  # the warm-up the fidelity runs used


def test_a_yaml_suite_brings_its_own_calibrated_training(tmp_path, monkeypatch):
    from nas.cli import search as search_command
    from trials import Budget

    suite = tmp_path / "suite.yaml"
    suite.write_text("name: mine\ntasks:\n  - task: mqar\n    n_train: 64\n    n_test: 16\n"
                     "    settings: {seq_len: 32, num_kv_pairs: 2, vocab_size: 32}\n"
                     "training: {steps: 250, lr: 0.002}\n")
    seen = {}
    monkeypatch.setattr(search_command, "_run",
                        lambda name, url, storage, definition, *rest: seen.update(d=definition))
    result = CliRunner().invoke(app, ["search", "demo", "--storage",
                                      f"sqlite:///{tmp_path / 's.db'}", "--suite", str(suite)])
    assert result.exit_code == 0, result.output
    budget = Budget.from_dict(seen["d"].budget)
    assert budget.steps == 250 and list(budget.rates) == pytest.approx([2e-3])


@pytest.mark.parametrize("flags, rates, schedule", [
    (["--suite", "recall64"], [3e-3], "constant"), (["--suite", "quick"], [1e-3], "cosine"),
    (["--suite", "recall64", "--lr", "1e-2"], [1e-2], "constant")])
def test_train_uses_the_rate_and_schedule_its_suite_was_measured_at(monkeypatch, flags, rates,
                                                                   schedule):
    """One rule for both commands: `hnas train` reads the suite's calibrated rate, schedule and
    warm-up as search does (but keeps its own --steps)."""
    import trials

    seen = {}

    def fake_run_trial(arch, suite, budget, seed, processes):
        seen["budget"], seen["processes"] = budget, processes
        raise SystemExit(0)

    monkeypatch.setattr(trials, "run_trial", fake_run_trial)
    result = CliRunner().invoke(app, ["train", "A*2", "--d-model", "32", *flags])
    assert result.exit_code == 0, result.output
    assert list(seen["budget"].rates) == pytest.approx(rates)
    assert seen["budget"].schedule == schedule and seen["budget"].steps == 200
    assert seen["processes"] is None  # run_trial's "one per usable core": tasks side by side
