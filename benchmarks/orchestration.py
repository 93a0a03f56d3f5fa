"""Per-trial overhead of the search layer against bare Optuna, and `hnas status`/`pareto` time.

    python benchmarks/orchestration.py [--trials 1000] [--block 100] [--space free]
                                       [--sampler nsga2] [--folder DIR] [--postgres URL]
                                       [--json-out FILE]

Both sides run in this process on the same kind of storage (an SQLite file each; with
`--postgres`, also both in that database), with the same sampler and seed and an evaluation
that returns at once, in alternating blocks of `--block` trials so that load from other
processes falls on both alike:

- ours: `nas.study.run_worker` on a study made as `hnas search` makes it, with `run=` an instant
  stand-in for `trials.run_trial` (a TrialResult whose quality is derived from the fingerprint).
  So every trial pays for what the layer does around training: the worker's loop (stale-trial
  check, counting the study's trials, one ask and one tell per trial), sampling the space and
  its constraints, building the ArchConfig, the analytic costs, the budget-slot and
  architecture claims, the duplicate lookup, the user attributes and the heartbeat.
- bare: `study.optimize(objective, n_trials=block)` on `optuna.storages.RDBStorage(url)` with
  its defaults, where the objective suggests as many categorical parameters as the space's
  candidates have on average, sets as many constraints, and returns two numbers.

ms/trial counts every Optuna trial (ours also runs the infeasible draws, recorded as PRUNED).
The first and last blocks are shown too: per-trial work that reads every trial of the study
grows with the study.

Then `hnas status NAME` and `hnas pareto NAME` run on our study as subprocesses (wall time,
Python's start included, median of three), next to `hnas --help` (start and imports only): what
a user waits for. Goals (issue 5): ours at most 2x bare per trial; `status` under 2 s at 1,000
trials.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

GOAL_RATIO, GOAL_STATUS_S = 2.0, 2.0
CLI_REPEATS = 3


def definition_for(space_ref: str, sampler: str, n_trials: int, seed: int):
    from nas.definition import StudyDefinition, toolkit_versions
    from search_spaces import load_space
    from trials.tasks import load_suite
    from trials.train import Budget

    space, suite = load_space(space_ref), load_suite("quick")
    return StudyDefinition(
        space_yaml=space.to_yaml(), space_fingerprint=space.fingerprint(),
        suite=suite.to_dict(), suite_fingerprint=suite.fingerprint(),
        budget=Budget(steps=1).to_dict(), objectives="quality,params", sampler=sampler,
        n_trials=n_trials, seed=seed, versions=toolkit_versions())


def instant_run(arch, suite, budget, seed=0):
    """Stands in for trials.run_trial: no training, a quality that depends on the architecture
    (so the front has some shape), everything else empty."""
    from trials.train.result import TrialResult

    fingerprint = arch.fingerprint()
    quality = int(hashlib.sha256(fingerprint.encode()).hexdigest()[:8], 16) / 2**32
    return TrialResult(pattern=arch.pattern, fingerprint=fingerprint, suite=suite.name,
                       quality=quality)


class Ours:
    """Our study, run block by block: `run_worker` until the study has `total` measured trials."""

    def __init__(self, url: str, name: str, definition) -> None:
        from nas.storage import open_storage
        from nas.study import create_or_check

        self.definition = definition
        self.storage = open_storage(url)
        self.study, _ = create_or_check(name, self.storage, definition)
        self.seconds, self.trials, self.blocks = 0.0, 0, []

    def run(self, total: int) -> None:
        from nas.study import run_worker

        seen = []
        started = time.perf_counter()
        run_worker(self.study, self.definition.with_trials(total), run=instant_run,
                   on_trial=lambda _study, trial: seen.append(trial.number))
        self.record(time.perf_counter() - started, len(seen))

    def record(self, seconds: float, trials: int) -> None:
        self.seconds += seconds
        self.trials += trials
        self.blocks.append(1000 * seconds / max(1, trials))

    def summary(self) -> dict:
        from nas.record import TrialRecord
        from nas.study import count_trials

        counts = count_trials(self.study)
        trials = self.study.get_trials(deepcopy=False)
        self.storage.engine.dispose()
        return {"measured": counts.measured, "pruned": counts.pruned,
                "duplicates": sum(TrialRecord.from_frozen_trial(t).duplicate_of is not None
                                  for t in trials),
                "mean_params": statistics.mean(len(t.params) for t in trials)}


class Bare(Ours):
    """Plain Optuna: one `optimize` per block, an objective that draws `n_params` categorical
    parameters, sets `n_constraints` constraints and returns two numbers."""

    CHOICES = ("A", "L", "M", "M2", "R", "H", "S")

    def __init__(self, url: str, name: str, definition, n_params: int,
                 n_constraints: int) -> None:
        from nas.samplers import make_sampler

        self.storage = optuna.storages.RDBStorage(url)
        self.study = optuna.create_study(
            study_name=name, storage=self.storage, directions=definition.directions,
            sampler=make_sampler(definition.sampler, definition.seed, definition.n_trials))
        self.n_params, self.n_constraints = n_params, n_constraints
        self.seconds, self.trials, self.blocks = 0.0, 0, []

    def objective(self, trial: optuna.Trial) -> tuple[float, float]:
        picks = [trial.suggest_categorical(f"p{i}", self.CHOICES) for i in range(self.n_params)]
        for i in range(self.n_constraints):
            trial.set_constraint(f"c{i}", -1.0)
        return len(set(picks)) / len(self.CHOICES), float(len(picks))

    def run(self, count: int) -> None:
        started = time.perf_counter()
        self.study.optimize(self.objective, n_trials=count)
        self.record(time.perf_counter() - started, count)


def shape_of_trials(definition, samples: int = 200) -> tuple[int, int]:
    """Parameters per trial (mean, rounded) and constraints per trial, drawn from the space
    in memory, so that the bare objective asks Optuna for as much."""
    space = definition.space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=definition.seed))
    params, constraints = [], 0
    for _ in range(samples):
        trial = study.ask()
        try:
            candidate = space.sample(trial)
        except Exception:  # noqa: BLE001 - an invalid draw still asked its parameters
            candidate = None
        params.append(len(trial.params))
        if candidate is not None:
            constraints = max(constraints, len(candidate.constraints))
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return max(1, round(statistics.mean(params))), constraints


def time_cli(args: list[str], url: str) -> float:
    """Median wall seconds of `hnas ARGS --storage URL` in a fresh Python."""
    times = []
    for _ in range(CLI_REPEATS):
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "nas", *args, "--storage", url],
                              capture_output=True, text=True, check=False,
                              env={**os.environ, "COLUMNS": "200"})
        times.append(time.perf_counter() - started)
        if done.returncode != 0:
            raise SystemExit(f"hnas {' '.join(args)} failed: {done.stderr.strip()}")
    return statistics.median(times)


def bench_storage(kind: str, url_ours: str, url_bare: str, args) -> dict:
    """Ours and bare in alternating blocks of `args.block` trials, so that load from other
    processes falls on both alike; then the CLI on our study."""
    definition = definition_for(args.space, args.sampler, args.trials, args.seed)
    name = f"orchestration-{int(time.time())}"
    n_params, n_constraints = shape_of_trials(definition)
    ours = Ours(url_ours, name, definition)
    bare = Bare(url_bare, name + "-bare", definition, n_params, n_constraints)
    print(f"[{kind}] {args.trials} trials each in blocks of {args.block}; bare draws {n_params} "
          f"parameters and sets {n_constraints} constraints per trial", file=sys.stderr)
    for done in range(0, args.trials, args.block):
        size = min(args.block, args.trials - done)
        ours.run(done + size)
        bare.run(size)
        print(f"[{kind}] {done + size}: ours {ours.blocks[-1]:.1f} ms/trial, bare "
              f"{bare.blocks[-1]:.1f} ms/trial", file=sys.stderr, flush=True)
    print(f"[{kind}] hnas status / pareto ...", file=sys.stderr, flush=True)
    row = {
        "storage": kind, "trials": args.trials, "space": args.space, "sampler": args.sampler,
        "ours_ms": 1000 * ours.seconds / ours.trials, "bare_ms": 1000 * bare.seconds / bare.trials,
        "ours_first_ms": ours.blocks[0], "ours_last_ms": ours.blocks[-1],
        "bare_first_ms": bare.blocks[0], "bare_last_ms": bare.blocks[-1],
        "ours_trials": ours.trials, **ours.summary(), "bare_params": n_params,
        "status_s": time_cli(["status", name], url_ours),
        "pareto_s": time_cli(["pareto", name], url_ours),
        "help_s": _help_seconds(),
    }
    bare.storage.engine.dispose()
    row["ratio"] = row["ours_ms"] / row["bare_ms"]
    return row


def _help_seconds() -> float:
    """Python start plus the CLI's imports: the floor under every `hnas` command."""
    times = []
    for _ in range(CLI_REPEATS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "nas", "--help"], capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def print_table(rows: list[dict]) -> None:
    header = ("storage", "trials", "ours ms/trial", "bare ms/trial", "ratio (<= 2x)",
              "ours first/last block", "bare first/last block", "status s (< 2)", "pareto s",
              "hnas --help s")
    lines = [header]
    for r in rows:
        lines.append((
            r["storage"], str(r["trials"]), f"{r['ours_ms']:.1f}", f"{r['bare_ms']:.1f}",
            f"{r['ratio']:.2f}x {'PASS' if r['ratio'] <= GOAL_RATIO else 'MISS'}",
            f"{r['ours_first_ms']:.1f} / {r['ours_last_ms']:.1f}",
            f"{r['bare_first_ms']:.1f} / {r['bare_last_ms']:.1f}",
            f"{r['status_s']:.2f} {'PASS' if r['status_s'] < GOAL_STATUS_S else 'MISS'}",
            f"{r['pareto_s']:.2f}", f"{r['help_s']:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for index, line in enumerate(lines):
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))
        if index == 0:
            print("  ".join("-" * width for width in widths))
    for r in rows:
        print(f"{r['storage']}: ours ran {r['ours_trials']} trials ({r['measured']} measured, "
              f"{r['pruned']} infeasible, {r['duplicates']} duplicates reused), "
              f"{r['mean_params']:.1f} parameters per trial on average; bare drew "
              f"{r['bare_params']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--block", type=int, default=100, help="trials per alternating block")
    parser.add_argument("--space", default="free", help="a space preset or YAML file")
    parser.add_argument("--sampler", default="nsga2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--postgres", help="also run on this PostgreSQL SQLAlchemy URL")
    parser.add_argument("--folder", help="write (and keep) the SQLite files here, e.g. on "
                        "/dev/shm to take the disk's fsync out of both sides "
                        "(default: a temporary folder on the disk, removed afterwards)")
    parser.add_argument("--json-out", default=os.path.join(tempfile.gettempdir(),
                                                           "hnas-bench-orchestration.json"))
    parser.add_argument("--cli-only", nargs=2, metavar=("STUDY", "URL"),
                        help="run no trials: time `hnas status` and `hnas pareto` on an "
                             "existing study (to re-time them when the machine is quiet)")
    args = parser.parse_args()
    if args.cli_only:
        name, url = args.cli_only
        print(f"{name} at {url}: status {time_cli(['status', name], url):.2f} s, pareto "
              f"{time_cli(['pareto', name], url):.2f} s, hnas --help {_help_seconds():.2f} s "
              f"(medians of {CLI_REPEATS} runs in a fresh Python)")
        return

    # The first trial would otherwise pay for importing torch and lightning.
    import trials.train  # noqa: F401

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per bare trial otherwise

    rows = []
    with contextlib.ExitStack() as stack:
        folder = args.folder or stack.enter_context(
            tempfile.TemporaryDirectory(prefix="hnas-orchestration-"))
        Path(folder).mkdir(parents=True, exist_ok=True)
        stamp = int(time.time())
        rows.append(bench_storage("sqlite", f"sqlite:///{Path(folder) / f'ours-{stamp}.db'}",
                                  f"sqlite:///{Path(folder) / f'bare-{stamp}.db'}", args))
        if args.postgres:
            rows.append(bench_storage("postgresql", args.postgres, args.postgres, args))
    print_table(rows)
    Path(args.json_out).write_text(json.dumps(rows, indent=2))
    print(f"rows written to {args.json_out}", file=sys.stderr)


if __name__ == "__main__":
    main()
