"""Input from anyone: every case is one line naming the problem, exit code 2, no traceback.

The README's YAML examples, over-long arguments, files that are not UTF-8, YAML bombs (deep
nesting, alias expansion), huge numbers, storage URLs and databases that cannot be used,
out-of-range options, unwritable outputs and damaged rows in a study database.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nas.cli import app

ROOT = Path(__file__).resolve().parent.parent
SPACE = """
name: tiny
pattern: "{A|M} {A|M}"
dims: {d_model: [16, 32], n_heads: 2, d_state: 4}
"""
SUITE = """
name: tiny
tasks:
  - task: mqar
    n_train: 64
    n_test: 32
    settings: {seq_len: 16, num_kv_pairs: 2, vocab_size: 16}
"""
LONG_PATTERN = " ".join(["(M*7 A)"] * 40)  # 319 bytes: over any file system's name limit


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def one_line_error(result, *words: str) -> str:
    """The result is exit 2 with one `error:` line containing `words`, and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in errors[0], errors[0]
    assert len(errors[0]) < 400, errors[0]
    return errors[0]


@pytest.fixture()
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "suite.yaml").write_text(SUITE)
    return tmp_path


# -- YAML and files ------------------------------------------------------------------------------


def readme_yaml_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def test_every_yaml_example_in_the_readme_loads():
    from search_spaces import SearchSpace
    from search_spaces.space import SpaceError
    from search_spaces.yaml_input import load_yaml
    from trials.tasks import Suite

    blocks = readme_yaml_blocks()
    assert blocks, "the README has no YAML example"
    for block in blocks:
        data = load_yaml(block, "README", SpaceError)
        if "pattern" in data:
            space = SearchSpace.from_yaml(block, "README")
            assert space.dims["rope_theta"].low == 1000.0  # 1e3 is a number (YAML 1.2)
        else:
            Suite.from_yaml(block, "README")


def test_exponent_floats_read_as_numbers_everywhere():
    from search_spaces.space import SpaceError
    from search_spaces.yaml_input import load_yaml

    assert load_yaml("[1e3, -2E-5, 7e+2, 1.5e3, 1_0, '1e3', 1e3x]", "x", SpaceError) == \
        [1000.0, -2e-05, 700.0, 1500.0, 10, "1e3", "1e3x"]
    result = invoke("cost", "A", "--dim", "rope_theta=1e3", "--json")
    assert result.exit_code == 0, result.output


def test_arguments_longer_than_a_file_name_are_not_paths(here):
    assert invoke("cost", LONG_PATTERN).exit_code == 0  # a pattern, not a file: its costs
    long_file = LONG_PATTERN + ".yaml"
    for args in (["space", "check", long_file], ["search", long_file, "--n-trials", "1"]):
        error = one_line_error(invoke(*args), "neither a preset space")
        assert "characters" in error  # cut in the middle, not 300 bytes of pattern
    one_line_error(invoke("train", LONG_PATTERN, "--suite", long_file), "File name too long")
    one_line_error(invoke("cost", long_file), "pattern", "characters")


@pytest.mark.parametrize("content, words", [
    (bytes(range(256)) * 4, "not UTF-8 text"),
    ("pattern: A\nname: café\n".encode("latin-1"), "not UTF-8 text: byte 0xe9"),
    ("pattern: A\n".encode("utf-16"), "not UTF-8 text (UTF-16?)"),
    (b"pattern: A\nx: " + b"{a: " * 20_000 + b"1" + b"}" * 20_000, "nested deeper than 64"),
    (b"pattern: A\nx: " + b"[" * 20_000 + b"]" * 20_000, "nested deeper than 64"),
    (b"a: &a [*a]\n", "refers to the value that contains it"),
    (b"pattern: A\ndims:\n  d_model: {int: [1, 1000000000000000000]}\n", "is larger than"),
    (b"pattern: A\ndims:\n  d_model: {int: [1, 1e18]}\n", "expected a positive integer"),
    (b"pattern: A\ndims:\n  rope_theta: {float: [1, 1e9], step: 1e-9}\n", "more than"),
    (b"pattern: A\n" + b"x: '" + b"a" * (1 << 20) + b"'\n", "larger than 1 MiB"),
])
def test_hostile_space_arch_and_suite_files(here, content, words):
    path = here / "bad.yaml"
    path.write_bytes(content)
    one_line_error(invoke("space", "check", str(path)), words)
    if "dims" not in content.decode("latin-1"):  # dims errors are the space's own
        one_line_error(invoke("cost", str(path)), words)
        one_line_error(invoke("train", "A", "--suite", str(path)), words)


def billion_laughs() -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\npattern: A\ndims: {d_model: *l8}\n"


def test_billion_laughs_is_refused_at_once(here):
    import time

    (here / "laughs.yaml").write_text(billion_laughs())
    started = time.monotonic()
    one_line_error(invoke("space", "check", "laughs.yaml"), "expands to more than 100,000")
    one_line_error(invoke("train", "A", "--suite", "laughs.yaml"), "expands to more than")
    assert time.monotonic() - started < 10


def test_a_space_that_cannot_be_sampled_creates_no_study(here):
    """Everything is checked before the study exists: a pattern of 122,880 layers, or a
    decision name longer than Optuna's column, never reaches a trial."""
    (here / "deep.yaml").write_text('pattern: "' + " ".join(["A*4096"] * 30) + '"\n')
    (here / "named.yaml").write_text('pattern: "{' + "x" * 600 + ': A|M}"\n')
    for space, words in (("deep.yaml", "122,880 layers"), ("named.yaml", "600 characters")):
        one_line_error(invoke("space", "check", space), words)
        one_line_error(invoke("search", space, "--storage", "sqlite:///s.db"), words)
    assert not (here / "s.db").exists()


# -- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["search", "space.yaml", "--seed", "-1"], "--seed -1: expected a whole number"),
    (["train", "A", "--seed", "-1"], "--seed -1"),
    (["space", "sample", "space.yaml", "--seed", "-1"], "--seed -1"),
    (["search", "space.yaml", "--seed", str(2**40)], "expected a whole number from 0"),
    (["trials", "x", "--limit", "-1"], "--limit -1: expected 0 or more"),
    (["space", "sample", "space.yaml", "--context", "-5"], "--context -5: must be at least 1"),
    (["space", "sample", "space.yaml", "--context", "0"], "--context 0: must be at least 1"),
    (["search", "space.yaml", "--timeout", "-1"], "--timeout -1: expected more than 0 seconds"),
    (["resume", "x", "--timeout", "0"], "--timeout 0: expected more than 0"),
    (["worker", "--study", "x", "--timeout", "-5"], "--timeout -5: expected more than 0"),
])
def test_out_of_range_options(here, args, words):
    one_line_error(invoke(*args), words)


# -- storage URLs and databases -----------------------------------------------------------------


@pytest.mark.parametrize("url, words", [
    ("mysql://user@localhost/db", "the driver is not installed"),
    ("sqlite://", "an in-memory database is gone when the command exits"),
    ("sqlite:///:memory:", "an in-memory database"),
])
def test_storage_urls_that_cannot_work(here, url, words):
    one_line_error(invoke("search", "space.yaml", "--storage", url), words)
    one_line_error(invoke("worker", "--study", "x", "--storage", url), words)
    one_line_error(invoke("study", "copy", "--from", url, "--to", "sqlite:///t.db"), words)


def make_study(path: Path, name: str = "s", n_trials: int = 3) -> str:
    """A study of `n_trials` measured trials, without training (an instant evaluation)."""
    from nas.definition import StudyDefinition, toolkit_versions
    from nas.storage import open_storage
    from nas.study import create_or_check, run_worker
    from search_spaces import SearchSpace
    from trials.tasks import Suite
    from trials.train import Budget
    from trials.train.result import TrialResult

    def instant(arch, suite, budget, seed=0):
        return TrialResult(pattern=arch.pattern, fingerprint=arch.fingerprint(),
                           suite=suite.name, quality=0.5)

    url = f"sqlite:///{path}"
    space, suite = SearchSpace.from_yaml(SPACE), Suite.from_yaml(SUITE)
    definition = StudyDefinition(
        space_yaml=space.to_yaml(), space_fingerprint=space.fingerprint(),
        suite=suite.to_dict(), suite_fingerprint=suite.fingerprint(),
        budget=Budget(steps=1, batch_size=8).to_dict(), objectives="quality,params",
        sampler="random", n_trials=n_trials, versions=toolkit_versions())
    storage = open_storage(url)
    study, _ = create_or_check(name, storage, definition)
    run_worker(study, definition, run=instant)
    storage.engine.dispose()
    return url


def test_damaged_and_read_only_databases(here):
    (here / "garbage.db").write_bytes(b"this is not a database" * 100)
    garbage = "sqlite:///garbage.db"
    for args in (["status", "s"], ["studies"], ["resume", "s"], ["worker", "--study", "s"],
                 ["search", "space.yaml", "--study", "s"]):
        one_line_error(invoke(*args, "--storage", garbage), "not a database")
    make_study(here / "ro.db")
    read_only = f"sqlite:///file:{here / 'ro.db'}?mode=ro&uri=true"
    assert invoke("status", "s", "--storage", read_only).exit_code == 0
    for args in (["resume", "s", "--n-trials", "4"], ["search", "space.yaml", "--study", "t"]):
        one_line_error(invoke(*args, "--storage", read_only), "read-only")


def test_study_copy_from_a_missing_file_creates_nothing(here):
    one_line_error(invoke("study", "copy", "--from", "sqlite:///missing.db", "--to",
                          "sqlite:///t.db"), "no database file at 'missing.db'")
    assert not (here / "missing.db").exists() and not (here / "t.db").exists()


# -- outputs -------------------------------------------------------------------------------------


def test_outputs_that_cannot_be_written(here):
    url = make_study(here / "study.db")
    (here / "afile").write_text("x")
    one_line_error(invoke("export", "s", "--storage", url, "--pareto", "-o", "afile"),
                   "a file, not a folder")
    one_line_error(invoke("export", "s", "--storage", url, "--pareto", "-o", "afile/sub"),
                   "afile/sub", "Not a directory")
    plot = invoke("pareto", "s", "--storage", url, "--plot", "afile/front.png")
    one_line_error(plot, "afile")


# -- damaged rows ------------------------------------------------------------------------------


def corrupt(url: str, sql: str, *params) -> None:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as connection:
        connection.execute(sql, params)


@pytest.mark.parametrize("key, value, words", [
    ("n_trials", '"many"', "'n_trials' is damaged ('many', expected int)"),
    ("budget", "[]", "'budget' is damaged"),
    ("objectives", '"quality,bogus"', "objective 'bogus': unknown"),
    ("suite", "{not json", "'suite' is damaged (not JSON"),
])
def test_a_damaged_study_attribute_is_named(here, key, value, words):
    url = make_study(here / "study.db")
    corrupt(url, "UPDATE study_user_attributes SET value_json = ? WHERE key = ?", value, key)
    for args in (["status", "s"], ["trials", "s"], ["pareto", "s"], ["export", "s", "--pareto"]):
        one_line_error(invoke(*args, "--storage", url), words)
    # Optuna's own reader (resume, worker) does not say which attribute it could not decode.
    for args in (["resume", "s"], ["worker", "--study", "s"]):
        one_line_error(invoke(*args, "--storage", url), "study 's'",
                       "damaged" if key in ("suite", "n_trials", "budget") else words)
    listing = invoke("studies", "--storage", url)
    if key != "suite":
        assert listing.exit_code == 0 and "Traceback" not in listing.output, listing.output


@pytest.mark.parametrize("sql, params, words", [
    ("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'pattern'", ("12345",),
     "user attribute 'pattern' is 12345, expected text"),
    ("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'arch'", ('"garbage"',),
     "user attribute 'arch' is 'garbage', expected a mapping"),
    ("UPDATE trial_user_attributes SET value_json = ? WHERE key = 'fingerprint'", ("{bad",),
     "attribute 'fingerprint' is not JSON"),
    ("UPDATE trial_values SET value = ? WHERE objective = 0", ("high",),
     "objective 0's value 'high' is not a number"),
    ("UPDATE trials SET state = ?", ("EXPLODED",), "state 'EXPLODED' is not a trial state"),
    ("UPDATE trials SET datetime_start = ?", ("yesterday",), "start date 'yesterday'"),
])
def test_a_damaged_trial_is_named_and_skipped(here, sql, params, words):
    url = make_study(here / "study.db")
    corrupt(url, sql.replace(" WHERE", " WHERE trial_id = 2 AND") if "WHERE" in sql
            else sql + " WHERE trial_id = 2", *params)
    for args in (["status", "s", "--json"], ["trials", "s", "--json"], ["pareto", "s"],
                 ["studies"]):
        result = invoke(*args, "--storage", url)
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
        assert f"trial 1 skipped: {words}" in result.output, result.output
    trials = invoke("trials", "s", "--json", "--storage", url)
    assert '"trial": 0' in trials.output and '"trial": 2' in trials.output
    assert '"trial": 1,' not in trials.output
