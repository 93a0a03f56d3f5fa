"""The long benchmarks' shared pieces (benchmarks/common.py) and a tiny end-to-end run of each
script (benchmarks/capacity.py, benchmarks/fidelity.py): a few steps at tiny widths."""

from __future__ import annotations

import itertools
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import capacity, fidelity
from benchmarks.common import (BenchError, ResultsFile, estimate_hours, kendall_tau, parse_shard,
                               ranks, run_key, shard, spearman, work)

ROOT = Path(__file__).resolve().parents[1]
KEY = ("name", "seed")


# -- results file -------------------------------------------------------------------------------

def test_results_file_appends_and_skips_done_runs(tmp_path):
    results = ResultsFile(tmp_path / "sub" / "rows.jsonl", KEY)
    runs = [{"name": n, "seed": s} for n, s in itertools.product("ab", (0, 1))]
    assert results.rows() == [] and results.pending(runs) == runs
    results.append({**runs[1], "accuracy": 0.5})
    results.append({**runs[2], "accuracy": 0.25})
    assert results.pending(runs) == [runs[0], runs[3]]
    assert [row["accuracy"] for row in results.rows_of(runs[1:3])] == [0.5, 0.25]
    # a run is its settings plus its seed: another seed of a done run is still pending
    assert results.pending([{"name": "a", "seed": 2}]) == [{"name": "a", "seed": 2}]


def test_results_file_defaults_fill_a_key_field_added_later(tmp_path):
    path = tmp_path / "rows.jsonl"
    ResultsFile(path, ("arch", "seed")).append({"arch": "a", "seed": 0, "score": 1.0})
    results = ResultsFile(path, ("arch", "schedule", "seed"), {"schedule": "cosine"})
    assert results.rows() == [{"arch": "a", "schedule": "cosine", "seed": 0, "score": 1.0}]
    old = {"arch": "a", "schedule": "cosine", "seed": 0}
    new = {"arch": "a", "schedule": "wsd", "seed": 0}
    assert results.pending([old, new]) == [new]  # the old row is still its run's row
    assert results.rows_of([new]) == []


def test_results_file_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    results = ResultsFile(path, KEY)
    results.append({"name": "a", "seed": 0})
    with open(path, "a") as handle:
        handle.write('{"name": "b", "se')  # killed mid-write
    assert [row["name"] for row in results.rows()] == ["a"]
    results.append({"name": "b", "seed": 0})
    assert path.read_text().count("\n") == 2
    assert [row["name"] for row in results.rows()] == ["a", "b"]


def test_results_file_rejects_bad_rows(tmp_path):
    path = tmp_path / "rows.jsonl"
    results = ResultsFile(path, KEY)
    with pytest.raises(BenchError, match="row has no 'seed'"):
        results.append({"name": "a"})
    path.write_text('not json\n{"name": "a", "seed": 0}\n')
    with pytest.raises(BenchError, match="rows.jsonl:1: not a JSON row"):
        results.rows()


def test_run_key_ignores_measurements_and_field_order():
    assert run_key({"seed": 1, "name": "x", "accuracy": 0.1}, KEY) == run_key(
        {"name": "x", "seed": 1}, KEY)
    assert run_key({"name": "x", "seed": 1}, KEY) != run_key({"name": "x", "seed": 2}, KEY)


def test_shards_are_disjoint_and_cover_the_runs():
    runs = [{"name": str(i), "seed": 0} for i in range(7)]
    parts = [shard(runs, i, 3) for i in range(3)]
    assert sorted((r["name"] for p in parts for r in p), key=int) == [str(i) for i in range(7)]
    assert [len(p) for p in parts] == [3, 2, 2]
    assert parse_shard("1/2") == (1, 2)
    for bad in ("2/2", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(BenchError, match="--shard"):
            parse_shard(bad)


def _hold(results, run, holder: str) -> None:
    """Write `run`'s claim as if process `holder` ("host pid") had taken it."""
    path = results._claim_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(holder)


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_claims_keep_live_holders_and_take_over_dead_ones(tmp_path):
    import os
    import socket

    results = ResultsFile(tmp_path / "rows.jsonl", KEY)
    a, b, c, d = ({"name": n, "seed": 0} for n in "abcd")
    here = socket.gethostname()
    _hold(results, a, f"{here} {os.getppid()}")  # a live process on this host
    _hold(results, b, f"{here} {_dead_pid()}")  # a process that has exited
    _hold(results, c, f"elsewhere.example {os.getpid()}")  # another host: cannot be checked
    assert not results.claim(a)
    assert results.claim(b)  # taken over
    assert results._claim_path(b).read_text() == f"{here} {os.getpid()}"
    assert not results.claim(c)
    results.append({**d, "accuracy": 1.0})
    assert not results.claim(d)  # finished runs are never claimed
    assert not results._claim_path(d).exists()
    results.release(b)
    assert not results._claim_path(b).exists()


def test_work_takes_its_shard_then_steals_unheld_runs_from_the_end(tmp_path):
    import os
    import socket

    results = ResultsFile(tmp_path / "rows.jsonl", KEY)
    runs = [{"name": str(i), "seed": 0} for i in range(6)]
    results.append({**runs[2], "accuracy": 0.0})  # done already
    _hold(results, runs[5], f"{socket.gethostname()} {os.getppid()}")  # another live process
    assert [r["name"] for r in work(results, runs, 0, 2)] == ["0", "4"]
    taken = []
    for run in work(results, runs, 0, 2, steal=True):
        assert results._claim_path(run).exists()  # held while the caller trains it
        taken.append(run["name"])
        results.append({**run, "accuracy": 0.5})
    assert taken == ["0", "4", "3", "1"]  # own shard, then the others from the end, 5 skipped
    assert not any(results._claim_path(r).exists() for r in runs[:5])  # released
    assert results.pending(runs) == [runs[5]]


def test_estimate_hours_times_each_group_once_and_splits_by_shard():
    calls = []

    def train(run):  # 3 s of fixed cost, 0.5 s a step for "a", 2 s a step for "b"
        calls.append((run["name"], run["steps"]))
        return 3 + run["steps"] * (0.5 if run["name"] == "a" else 2.0)

    runs = [{"name": n, "seed": s, "steps": 1000} for s in (0, 1) for n in "ab"]
    costs, hours = estimate_hours(runs, train, group=lambda r: r["name"], shards=2,
                                  todo=lambda r: r != runs[2])
    assert calls == [("a", 1), ("a", 2), ("a", 8), ("b", 1), ("b", 2), ("b", 8)]
    assert costs["a"] == pytest.approx((0.5, 3.0)) and costs["b"] == pytest.approx((2.0, 3.0))
    # shard 0 holds runs 0 and 2 (2 is done), shard 1 runs 1 and 3
    assert hours == pytest.approx([503 / 3600, 2 * 2003 / 3600])


# -- rank statistics ----------------------------------------------------------------------------

def test_spearman_and_kendall_known_values():
    # scipy.stats: spearmanr = 0.8207826816681233, kendalltau (tau-b) = 0.9128709291752769
    assert spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(8 / math.sqrt(95))
    assert kendall_tau([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(5 / math.sqrt(30))
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0 and spearman([1, 2, 3], [1, 2, 3]) == 1.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1, 1], [1, 2]))
    assert ranks([3.0, 1.0, 3.0, 2.0]) == [2.5, 0.0, 2.5, 1.0]
    with pytest.raises(ValueError, match="3 against 2"):
        kendall_tau([1, 2, 3], [1, 2])


def test_kendall_matches_its_definition_with_ties():
    """tau-b = sum sign(dx) sign(dy) / sqrt(sum sign(dx)^2 * sum sign(dy)^2), on data with
    many ties on both sides."""
    rng = random.Random(0)
    for _ in range(20):
        n = rng.randint(3, 12)
        xs = [rng.randint(0, 3) for _ in range(n)]
        ys = [rng.randint(0, 3) for _ in range(n)]
        sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
        pairs = list(itertools.combinations(range(n), 2))
        num = sum(sign(xs[i] - xs[j]) * sign(ys[i] - ys[j]) for i, j in pairs)
        den = math.sqrt(sum(sign(xs[i] - xs[j]) ** 2 for i, j in pairs) *
                        sum(sign(ys[i] - ys[j]) ** 2 for i, j in pairs))
        expected = num / den if den else float("nan")
        got = kendall_tau(xs, ys)
        assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)


# -- capacity.py --------------------------------------------------------------------------------

TINY = ["--seq-len", "32", "--vocab", "32", "--d-model", "16", "--steps", "2", "--n-train", "64",
        "--n-test", "32", "--lrs", "1e-3", "--m2-head-dim", "8", "--m2-d-state", "8",
        "--batch-size", "8"]


def test_ratio_patterns():
    from fractions import Fraction

    assert [capacity.ratio_pattern(Fraction(r), 16) for r in capacity.RATIOS] == [
        "M*16", "(M*15 A)*1", "(M*7 A)*2", "(M*3 A)*4", "(M A)*8", "A*16"]
    for text in capacity.RATIOS:
        arch = capacity.build_arch({"pattern": capacity.ratio_pattern(Fraction(text), 16),
                                    "d_model": 16, "d_state": 4, "m2_d_state": 8,
                                    "m2_head_dim": 8, "vocab_size": 32})
        attention = sum(layer.mixer == "A" for layer in arch.layers)
        assert len(arch.layers) == 16 and Fraction(attention, 16) == Fraction(text)
    with pytest.raises(BenchError, match="1/3 is not 1/k with k dividing --depth 16"):
        capacity.ratio_pattern(Fraction(1, 3), 16)


def test_capacity_pairs_runs_resumes_and_plots(tmp_path, capsys):
    out, png = tmp_path / "pairs.jsonl", tmp_path / "pairs.png"
    argv = ["pairs", "--mixers", "R", "--patterns", "L2 A", "--pairs", "4", "8", "--out", str(out),
            *TINY]
    capacity.main([*argv, "--shard", "1/2"])
    first = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["pattern"], r["pairs"]) for r in first] == [("L2 A", 4), ("L2 A", 8)]
    capacity.main([*argv, "--plot", str(png)])  # the other shard's runs, then the table
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 4 and rows[:2] == first
    assert all(r["status"] == "ok" and 0 <= r["accuracy"] <= 1 for r in rows)
    assert all(r["curve"][-1] == [2, r["accuracy"]] for r in rows)  # five points, or one
    state = {r["pattern"]: r["state_bytes"] for r in rows}
    assert state["R*2"] < state["L2 A"]  # the RG-LRU state is fixed, attention's cache is not
    capsys.readouterr()
    capacity.main(argv)  # everything done: trains nothing
    printed = capsys.readouterr().out
    assert "0 pending" in printed and "R*2" in printed and "8kv" in printed
    assert png.stat().st_size > 0 and out.read_text().count("\n") == 4


def test_capacity_ratio_table_has_cache_at_128k(tmp_path, capsys):
    out = tmp_path / "ratio.jsonl"
    capacity.main(["ratio", "--depth", "4", "--ratios", "0", "1/4", "1", "--pairs", "4",
                   "--out", str(out), "--plot", str(tmp_path / "ratio.png"), *TINY])
    rows = {r["ratio"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert {r["pattern"] for r in rows.values()} == {"M*4", "(M*3 A)*1", "A*4"}
    assert rows["0"]["cache_bytes_128k"] < rows["1/4"]["cache_bytes_128k"] < rows["1"][
        "cache_bytes_128k"]
    assert "0.250" in capsys.readouterr().out  # one attention layer in four: a quarter's cache


def test_capacity_default_ratios_are_those_the_depth_holds(tmp_path):
    ratio = capacity.parse_args(["ratio", "--out", str(tmp_path / "r.jsonl")])
    assert (ratio.depth, ratio.pairs) == (8, [16])
    assert [run["ratio"] for run in ratio.runs] == ["0", "1/8", "1/4", "1/2", "1"]
    deep = capacity.parse_args(["ratio", "--depth", "16", "--out", str(tmp_path / "r.jsonl")])
    assert [run["ratio"] for run in deep.runs] == ["0", "1/16", "1/8", "1/4", "1/2", "1"]
    pairs = capacity.parse_args(["pairs", "--out", str(tmp_path / "p.jsonl")])
    assert sorted({run["pairs"] for run in pairs.runs}) == [4, 8, 12, 16]
    assert {run["seq_len"] for run in pairs.runs} == {64}


def test_capacity_bad_input_exits_2_in_one_line(tmp_path):
    for argv, message in ((["ratio", "--ratios", "1/3"], "1/3 is not 1/k"),
                          (["pairs", "--mixers", "Q"], "unknown mixer 'Q'"),
                          (["pairs", "--patterns", "A M A"], "has 3 layers, not --depth 2"),
                          (["pairs", "--pairs", "64", "--seq-len", "128"], "--pairs 64"),
                          (["pairs", "--shard", "3/2"], "--shard")):
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "capacity.py"), *argv,
                               "--out", str(tmp_path / "x.jsonl")],
                              capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and "Traceback" not in done.stderr


# -- fidelity.py --------------------------------------------------------------------------------

def test_fidelity_samples_are_deterministic_feasible_and_at_one_width():
    first = fidelity.draw_samples("free", 3, 32, seed=0, exclude=set())
    again = fidelity.draw_samples("free", 3, 32, seed=0, exclude=set())
    assert [a.fingerprint() for _, a in first] == [a.fingerprint() for _, a in again]
    assert len({a.fingerprint() for _, a in first}) == 3
    assert all(arch.d_model == 32 for _, arch in first)
    with pytest.raises(BenchError, match="jamba_like space has widths 64, 128"):
        fidelity.draw_samples("jamba_like", 1, 32, seed=0, exclude=set())


def test_fidelity_end_to_end_summary(tmp_path, capsys):
    suite = tmp_path / "tiny.yaml"
    suite.write_text("name: tiny\ntasks:\n  - task: mqar\n    n_train: 64\n    n_test: 32\n"
                     "    settings: {seq_len: 32, num_kv_pairs: 4, vocab_size: 32}\n")
    out = tmp_path / "fidelity.jsonl"
    argv = ["--suite", str(suite), "--presets", "transformer", "hawk", "--spaces", "free",
            "--samples", "1", "--d-model", "32", "--steps", "2", "--multiple", "3",
            "--seeds", "0", "1", "--out", str(out)]
    partial = fidelity.main([*argv, "--shard", "0/2"])
    assert partial["architectures"] < 3  # half the runs: no architecture has them all
    figures = fidelity.main([*argv, "--shard", "1/2", "--plot", str(tmp_path / "f.png")])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 * 2 * 2 and len({run_key(r, fidelity.KEY) for r in rows}) == 12
    assert figures["architectures"] == 3 and set(figures["reference_self_spearman"]) == {"0-1"}
    assert set(figures["cheap_self_spearman"]) == {"0-1"}
    # the reference runs score the test set at every multiple of the 1x budget
    assert {tuple(step for step, _, _ in curve) for r in rows for curve in r["curve"].values()} == {
        (2,), (2, 4, 6)}
    assert all(loss > 0 for r in rows for loss in r["loss"].values())
    # the 2x budget read off the reference's curve, and the reference's agreement by loss
    assert set(figures["reference_self_spearman_loss"]) == {"0-1"}
    for label in ("1x seed 0", "1x seed 1", "1x seed mean", "1x -loss s0", "1x -loss mean",
                  "curve 2x"):
        assert set(figures[label]) == {"spearman", "kendall"}
    printed = capsys.readouterr().out
    assert "seed-to-seed Spearman" in printed and "Kendall's tau-b" in printed
    again = fidelity.main([*argv, "--summary"])  # the rows alone give the same figures
    assert json.dumps(again, sort_keys=True) == json.dumps(figures, sort_keys=True)
    # a budget between 1x and the reference, added later: its runs come after every earlier
    # run (their shards do not move) and the summary compares it with the reference
    before = fidelity.planned_runs(fidelity.parse_args(argv), fidelity.parse_args(argv).archs)
    wider = [*argv, "--between", "2"]
    after = fidelity.planned_runs(fidelity.parse_args(wider), fidelity.parse_args(wider).archs)
    assert after[:len(before)] == before and {r["steps"] for r in after[len(before):]} == {4}
    capsys.readouterr()
    fidelity.main([*wider, "--seeds", "0"])  # trains seed 0 of the 2x budget only
    figures = fidelity.main([*wider, "--summary"])  # one seed of it so far: reported alone
    assert "2x seed 0" in figures and "2x seed 1" not in figures
    assert "2x seed mean" not in figures
    assert "2x (4 steps) seed 0 vs reference" in capsys.readouterr().out
    figures = fidelity.main(wider)
    assert set(figures["2x seed mean"]) == {"spearman", "kendall", "seconds"}
    assert set(figures["2x seed 1"]) == {"spearman", "kendall", "seconds"}
    assert "2x (4 steps) seed mean vs reference" in capsys.readouterr().out
    # the same budget with the warmup-stable-decay schedule, and with a longer warm-up: runs
    # of their own, after those
    wsd = [*argv, "--between", "2", "2:wsd", "2:cosine:3"]
    planned = fidelity.planned_runs(fidelity.parse_args(wsd), fidelity.parse_args(wsd).archs)
    assert planned[:len(after)] == after
    assert [(r["steps"], r["schedule"], r["warmup_steps"]) for r in planned[len(after):]] == \
        [(4, "wsd", None)] * 6 + [(4, "cosine", 3)] * 6
    figures = fidelity.main(wsd)
    assert set(figures["2x wsd seed mean"]) == {"spearman", "kendall", "seconds"}
    assert set(figures["2x warm-up 3 seed mean"]) == {"spearman", "kendall", "seconds"}
    assert figures["2x seed mean"] == fidelity.main([*wider, "--summary"])["2x seed mean"]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(r.get("schedule") == "wsd" for r in rows) == 3 * 2
    assert sum(r.get("warmup_steps") == 3 for r in rows) == 3 * 2
    # the 1x budget under another schedule is a budget of its own; 1x cosine is not
    constant = [*argv, "--between", "1:constant"]
    planned = fidelity.parse_args(constant)
    assert planned.between == [(1, "constant", None)]
    assert {(r["steps"], r["schedule"]) for r in fidelity.planned_runs(
        planned, planned.archs)[len(before):]} == {(2, "constant")}
    for bad in (["3"], ["2:linear"], ["2", "2:cosine"], ["x"], ["2:cosine:0"], ["2:wsd:1:1"],
                ["1"], ["0:wsd"]):
        with pytest.raises(SystemExit):  # not below --multiple 3; no such schedule; twice
            fidelity.parse_args([*argv, "--between", *bad])


def test_fidelity_curve_scores_read_one_step_of_every_task():
    from benchmarks import fidelity_report

    row = {"arch": "a", "seed": 1, "steps": 6, "status": "ok",
           "curve": {"t1": [[2, 0.1, 3.0], [4, 0.3, 2.0]], "t2": [[2, 0.2, 3.0], [4, 0.5, 1.0]]}}
    failed = {**row, "arch": "b", "status": "failed"}
    short = {**row, "arch": "c", "curve": {"t1": [[4, 0.3, 2.0]], "t2": [[2, 0.2, 3.0]]}}
    assert fidelity_report.curve_scores([row, failed, short], 6, 4) == {"a": {1: pytest.approx(0.4)}}
    assert fidelity_report.curve_scores([row], 6, 2) == {"a": {1: pytest.approx(0.15)}}
    assert fidelity_report.curve_scores([row], 8, 2) == {}  # another budget's runs


def test_calibrate_appends_a_curve_per_run_and_skips_done_runs(tmp_path, capsys):
    from benchmarks import calibrate

    out = tmp_path / "probes.jsonl"
    argv = ["--archs", "A", "transformer", "--seq-len", "16", "--pairs", "2", "--vocab", "8",
            "--steps", "4", "--points", "2", "--d-model", "16", "--out", str(out)]
    rows = calibrate.main(argv)
    assert [row["arch"] for row in rows] == ["A", "transformer"]
    assert all([step for step, _, _ in row["curve"]] == [2, 4] for row in rows)
    assert all(0 <= row["q"] <= 1 for row in rows)
    assert calibrate.main(argv) == []  # both rows are there: nothing is trained again
    assert len(out.read_text().splitlines()) == 2
    with pytest.raises(SystemExit) as exit_info:
        calibrate.main(["--archs", "A*{", "--out", str(out)])
    assert exit_info.value.code == 2
    assert "calibrate.py: error:" in capsys.readouterr().err
