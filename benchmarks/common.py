"""Shared pieces of the long-running benchmarks (capacity.py, fidelity.py): a resumable JSONL
results file, the --shard split and the one-thread rule (the rank statistics live in
nas.ranking and are re-exported here).

A results file holds one JSON row per finished run, appended (and flushed to disk) the moment
the run ends. Every row carries the settings that define its run; `run_key` turns those into a
key, so a script restarted after a kill, or a second process on the other core, skips every run
whose row is already there. A half-written last line (the process was killed mid-write) is
ignored on reading and overwritten by the next append.

While a run trains, its process holds a claim on it (a file named after the run's key in
`<results>.claims/`, holding host and pid), so that processes can share one list: `--steal`
lets a process whose own shard is done take the other shards' unclaimed runs, from the end of
the list (where their owners reach last). A claim whose process is gone (same host, pid dead)
is taken over, so a killed process blocks nothing.

Unlike the other scripts in this folder, the helpers here are tested (tests/test_bench_common.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from nas.ranking import kendall_tau, ranks, spearman  # noqa: F401 - shared with nas


class BenchError(ValueError):
    """Bad input to a benchmark: one line naming the option and the value."""


def run_key(row: dict[str, Any], fields: Sequence[str]) -> str:
    """The identity of a run: its values of `fields`, as canonical JSON."""
    missing = [name for name in fields if name not in row]
    if missing:
        raise BenchError(f"row has no {missing[0]!r} (a run is keyed by {', '.join(fields)})")
    return json.dumps([row[name] for name in fields], sort_keys=True)


class ResultsFile:
    """Append-only JSONL rows keyed by `fields` (every setting of a run plus its seed).
    `defaults` gives a key field added after rows were written the value those older rows
    had, so that they keep their identity (they are read with it filled in)."""

    def __init__(self, path: str | Path, fields: Sequence[str],
                 defaults: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.fields = tuple(fields)
        self.defaults = dict(defaults or {})

    def rows(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        rows = []
        lines = self.path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append({**self.defaults, **json.loads(line)})
            except json.JSONDecodeError:
                if number == len(lines):  # cut short by a kill: that run is redone
                    continue
                raise BenchError(f"{self.path}:{number}: not a JSON row") from None
        return rows

    def done(self) -> set[str]:
        return {run_key(row, self.fields) for row in self.rows()}

    def append(self, row: dict[str, Any]) -> None:
        run_key(row, self.fields)  # refuse rows that could never be recognised as done
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = self.path.read_bytes() if self.path.exists() else b""
        with open(self.path, "ab") as handle:
            if text and not text.endswith(b"\n"):
                # a torn last line: drop it so that the file stays one row per line
                handle.truncate(text.rfind(b"\n") + 1)
            handle.write((json.dumps(row, sort_keys=True) + "\n").encode())
            handle.flush()
            os.fsync(handle.fileno())

    def _claim_path(self, run: dict[str, Any]) -> Path:
        digest = hashlib.sha1(run_key(run, self.fields).encode()).hexdigest()[:20]
        return self.path.with_name(self.path.name + ".claims") / digest

    def claim(self, run: dict[str, Any]) -> bool:
        """Take `run` for this process; False if a live process holds it (or it has a row)."""
        path = self._claim_path(run)
        path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{socket.gethostname()} {os.getpid()}"
        for _ in range(2):  # the second try follows the removal of a dead holder's claim
            try:
                with open(path, "x") as handle:
                    handle.write(me)
            except FileExistsError:
                if not _holder_is_dead(path, me):
                    return False
                path.unlink(missing_ok=True)
                continue
            if self.pending([run]):
                return True
            path.unlink(missing_ok=True)  # finished meanwhile by another process
            return False
        return False

    def release(self, run: dict[str, Any]) -> None:
        self._claim_path(run).unlink(missing_ok=True)

    def rows_of(self, runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of `runs` (rows of other settings in the same file are left out)."""
        wanted = {run_key(run, self.fields) for run in runs}
        return [row for row in self.rows() if run_key(row, self.fields) in wanted]

    def pending(self, runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The runs (dicts of the key fields) that have no row yet."""
        done = self.done()
        return [run for run in runs if run_key(run, self.fields) not in done]


def _holder_is_dead(path: Path, me: str) -> bool:
    """Whether the process named in claim file `path` is gone (only checkable on this host)."""
    try:
        host, pid = path.read_text().split()
    except (OSError, ValueError):
        return True  # vanished or torn: nobody holds it
    if f"{host} {pid}" == me:
        return True  # our own leftover
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False


def work(results: ResultsFile, runs: Sequence[dict[str, Any]], index: int, count: int,
         steal: bool = False) -> Iterator[dict[str, Any]]:
    """The runs this process trains, each claimed before it is yielded and released once the
    caller has appended its row (or failed): shard `index` of `count` first, then, with
    `steal`, the other shards' runs that nobody holds, last first."""
    own = shard(runs, index, count)
    others = [run for run in reversed(runs) if run not in own] if steal else []
    for run in [*own, *others]:
        if not results.claim(run):  # held by a live process, or it has a row
            continue
        try:
            yield run
        finally:
            results.release(run)


SHARD_HELP = ("i/n: train every n-th run of the full list from the i-th (0-based), "
              "skipping those with a row")


def add_run_options(parser: Any, default_out: str, plot_help: str) -> None:
    """--out, --shard, --estimate and --plot, as every long benchmark takes them."""
    parser.add_argument("--out", help=f"results file (default {default_out})")
    parser.add_argument("--shard", default="0/1", help=SHARD_HELP)
    parser.add_argument("--steal", action="store_true",
                        help="once this shard is done, train the other shards' runs that no "
                             "live process holds (from the end of the list)")
    parser.add_argument("--estimate", action="store_true",
                        help="train nothing but a few steps of each architecture; print the "
                             "hours the runs without a row would take on each --shard")
    parser.add_argument("--plot", metavar="PNG", help=plot_help)


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` (0 <= i < n) -> (i, n)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise BenchError(f"--shard: expected i/n such as 0/2, got {text!r}") from None
    if not 0 <= index < count:
        raise BenchError(f"--shard: need 0 <= i < n, got {text!r}")
    return index, count


def shard(runs: Sequence[dict[str, Any]], index: int, count: int) -> list[dict[str, Any]]:
    """Every count-th run from `index` of the full, ordered run list: the shards of one list are
    disjoint and cover it, and each gets a like mix of cheap and dear runs."""
    return list(runs[index::count])


def one_thread() -> None:
    """One torch thread per process (two processes share the two cores)."""
    import torch

    torch.set_num_threads(1)


# -- cost estimate ------------------------------------------------------------------------------

def print_estimate(hours: list[float], what: str) -> None:
    print(f"estimated hours left ({what}): " +
          ", ".join(f"shard {i}/{len(hours)} {h:.2f} h" for i, h in enumerate(hours)) +
          " (measured on this machine under its current load)")


def estimate_hours(runs: Sequence[dict[str, Any]], train: Callable[[dict[str, Any]], float],
                   group: Callable[[dict[str, Any]], str], shards: int = 1,
                   todo: Callable[[dict[str, Any]], bool] = lambda run: True,
                   probe: tuple[int, int] = (2, 8)
                   ) -> tuple[dict[str, tuple[float, float]], list[float]]:
    """Time `runs` without training them: for the first run of each `group`, `train` (returning
    seconds) runs once at one step to warm up (data generation, kernel compilation), then at
    `probe` steps; the difference gives seconds per step, the rest a fixed cost per run
    (evaluation, model building). Returns {group: (seconds per step, fixed seconds)} and the
    hours left in each of `shards` shards (`runs` is the full list, split as `shard` splits it;
    runs for which `todo` is false cost nothing)."""
    costs: dict[str, tuple[float, float]] = {}
    for run in runs:
        name = group(run)
        if name in costs or not todo(run):
            continue
        train({**run, "steps": 1})
        low, high = (train({**run, "steps": steps}) for steps in probe)
        per_step = max(0.0, (high - low) / (probe[1] - probe[0]))
        costs[name] = (per_step, max(0.0, low - probe[0] * per_step))
        print(f"  {name:<40} {per_step:7.3f} s/step  + {costs[name][1]:6.1f} s per run",
              flush=True)
    hours = []
    for index in range(shards):
        seconds = 0.0
        for run in shard(runs, index, shards):
            if not todo(run):
                continue
            per_step, fixed = costs[group(run)]
            seconds += fixed + per_step * run["steps"]
        hours.append(seconds / 3600)
    return costs, hours
