"""Continuation against retraining: what a promoted candidate scores, and what it costs.

    python benchmarks/continuation.py [--architectures 4] [--check 1]

For the first N architectures of the replay table (benchmarks/replay.py, `quick`, rungs
30,90,270), train each as successive halving now does: the wsd schedule, checkpointed where each
rung's decay begins, each rung continued from the one below (30, then 90 - 24, then 270 - 72
steps). The retrained score at 270 steps under the cosine schedule is the replay table's row, so
only the continuation is trained here. For the first `--check` architectures, one uninterrupted
wsd run to 270 steps is trained too: continuation must equal it (to floating-point tolerance).
Rows go to benchmarks/results/continuation_quick.jsonl; see "Continuation" in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BenchError, ResultsFile, one_thread  # noqa: E402
from benchmarks.replay import BATCH, LR, RESULTS as REPLAY, RUNGS, SEED, SUITE  # noqa: E402

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "continuation_quick.jsonl"
KEY = ("fingerprint", "suite", "rungs", "batch_size", "lr", "seed")


def replay_rows(rungs: tuple[int, ...]) -> list[dict]:
    """The replay table's architectures with every rung recorded, in its order, each with its
    retrained (cosine) quality per rung."""
    by_arch: dict[str, dict] = {}
    for row in ResultsFile(REPLAY, ("fingerprint", "suite", "steps")).rows():
        entry = by_arch.setdefault(row["fingerprint"], {"config": row["config"],
                                                        "pattern": row["pattern"],
                                                        "retrained": {}})
        entry["retrained"][row["steps"]] = row["quality"]
    return [{"fingerprint": fingerprint, **entry} for fingerprint, entry in by_arch.items()
            if all(steps in entry["retrained"] for steps in rungs)]


def continue_one(entry: dict, rungs: tuple[int, ...], check: bool) -> dict:
    from search_spaces import ArchConfig
    from trials.train import Budget, run_trial

    arch = ArchConfig.from_dict(entry["config"])
    top = Budget(steps=rungs[-1], batch_size=BATCH, lr=LR, decode_context=0, schedule="wsd",
                 warmup_steps=max(1, round(0.1 * rungs[0])))
    row = {"fingerprint": entry["fingerprint"], "pattern": entry["pattern"], "suite": SUITE,
           "rungs": list(rungs), "batch_size": BATCH, "lr": LR, "seed": SEED,
           "continued": {}, "retrained": {str(s): entry["retrained"][s] for s in rungs},
           "steps_trained": {}, "train_seconds": {}}
    resume, start = None, 0
    for steps in rungs:
        budget = Budget.from_dict({**top.to_dict(), "steps": steps, "eval_every": steps})
        result = run_trial(arch, SUITE, budget, seed=SEED, resume=resume)
        if not result.ok:
            row["failure"] = result.failure
            return row
        row["continued"][str(steps)] = result.quality
        row["steps_trained"][str(steps)] = steps - start
        row["train_seconds"][str(steps)] = round(sum(t.train_seconds
                                                     for t in result.tasks.values()), 3)
        resume = result.checkpoints
        start = budget.decay_start
        row["loss_continued"] = {name: t.metrics["loss"] for name, t in result.tasks.items()}
    if check:
        straight = run_trial(arch, SUITE, Budget.from_dict({**top.to_dict(),
                                                            "eval_every": rungs[-1]}), seed=SEED)
        row["straight_wsd"] = straight.quality
        row["loss_straight"] = {name: t.metrics["loss"] for name, t in straight.tasks.items()}
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", type=int, default=4)
    parser.add_argument("--check", type=int, default=1, help="architectures also trained in one "
                        "uninterrupted wsd run, to compare")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    try:
        one_thread()
        results = ResultsFile(args.out, KEY)
        done = {row["fingerprint"] for row in results.rows()}
        for number, entry in enumerate(replay_rows(RUNGS)[:args.architectures]):
            if entry["fingerprint"] in done:
                continue
            started = time.perf_counter()
            row = continue_one(entry, RUNGS, number < args.check)
            results.append(row)
            print(f"{row['pattern']:<24} continued {row['continued']}  retrained "
                  f"{row['retrained']}  ({time.perf_counter() - started:.0f} s)", flush=True)
        summarise(results.rows())
    except BenchError as error:
        sys.exit(f"error: {error}")


def summarise(rows: list[dict]) -> None:
    rows = [row for row in rows if "failure" not in row]
    if not rows:
        return
    top = str(RUNGS[-1])
    gaps = [row["continued"][top] - row["retrained"][top] for row in rows]
    continued = sum(sum(row["steps_trained"].values()) for row in rows)
    retrained = len(rows) * sum(RUNGS)
    print(f"{len(rows)} architectures: quality at {top} steps, continued (wsd) minus retrained "
          f"(cosine): mean {sum(gaps) / len(gaps):+.4f}, range {min(gaps):+.4f} .. "
          f"{max(gaps):+.4f}; steps trained to reach the top rung {continued} against "
          f"{retrained} ({continued / retrained:.2f})")
    for row in rows:
        if "straight_wsd" in row:
            differences = [abs(row["loss_continued"][name] - row["loss_straight"][name])
                           for name in row["loss_straight"]]
            print(f"{row['pattern']}: continued {row['continued'][top]:.6f} vs one wsd run "
                  f"{row['straight_wsd']:.6f}; largest task-loss difference "
                  f"{max(differences):.2e}")


if __name__ == "__main__":
    main()
