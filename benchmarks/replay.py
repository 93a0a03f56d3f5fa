"""Replay benchmark: multi-fidelity search strategies compared on a recorded table.

    python benchmarks/replay.py record              # train what has no row yet (resumable)
    python benchmarks/replay.py simulate [--plot hv.png]   # train nothing

`record` trains every architecture of a small space (benchmarks/spaces/replay.yaml, 96
architectures) once at each rung budget (`--rungs`, default 30,90,270 steps) on the `quick`
suite, one fresh model per budget as `hnas search --fidelity sh` does it (a promoted candidate is
retrained at the next rung's budget), and appends one row per (architecture, steps) to
benchmarks/results/replay_quick.jsonl the moment it finishes. The architectures are visited in
a fixed shuffled order, so a partial table is a random subset of the space.

`simulate` replays searches on that table: K workers, simulated wall-clock from each run's
measured training seconds, many seeds; see the section "Replay" of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BenchError, ResultsFile, one_thread  # noqa: E402
from search_spaces import load_space  # noqa: E402

HERE = Path(__file__).parent
SPACE = HERE / "spaces" / "replay.yaml"
RESULTS = HERE / "results" / "replay_quick.jsonl"
KEY = ("fingerprint", "suite", "steps", "batch_size", "lr", "seed")
RUNGS = (30, 90, 270)
SUITE, BATCH, LR, SEED = "quick", 32, 1e-3, 0


def space_architectures(order_seed: int = 0) -> list:
    """Every architecture of the replay space, in a fixed shuffled order."""
    import optuna

    space = load_space(str(SPACE))
    archs = {}
    for params in space.enumerate():
        arch = space.sample(optuna.trial.FixedTrial(params)).arch
        archs.setdefault(arch.fingerprint(), arch)
    ordered = sorted(archs.values(), key=lambda arch: arch.fingerprint())
    random.Random(order_seed).shuffle(ordered)
    return ordered


def planned_runs(rungs: tuple[int, ...]) -> list[dict]:
    """Every rung of one architecture before the next: a partial table has whole curves."""
    return [{"fingerprint": arch.fingerprint(), "pattern": arch.pattern, "suite": SUITE,
             "steps": steps, "batch_size": BATCH, "lr": LR, "seed": SEED,
             "config": arch.to_dict()}
            for arch in space_architectures() for steps in rungs]


def train_one(run: dict) -> dict:
    from search_spaces import ArchConfig
    from search_spaces.cost import estimate
    from trials.train import Budget, run_trial

    arch = ArchConfig.from_dict(run["config"])
    budget = Budget(steps=run["steps"], batch_size=run["batch_size"], lr=run["lr"],
                    decode_context=0, eval_every=run["steps"])
    started = time.perf_counter()
    result = run_trial(arch, run["suite"], budget, seed=run["seed"])
    return {**run, "status": result.status, "failure": result.failure,
            "quality": result.quality if result.ok else None,
            "params": estimate(arch, context=1).params,
            "train_seconds": round(sum(t.train_seconds for t in result.tasks.values()), 3),
            "seconds": round(time.perf_counter() - started, 2)}


def record(args: argparse.Namespace) -> None:
    one_thread()
    results = ResultsFile(args.out, KEY)
    runs = planned_runs(args.rungs)
    todo = results.pending(runs)
    print(f"{len(runs)} runs ({len(runs) // len(args.rungs)} architectures x "
          f"{len(args.rungs)} rungs), {len(todo)} pending -> {args.out}", flush=True)
    for number, run in enumerate(todo, 1):
        row = train_one(run)
        results.append(row)
        quality = float("nan") if row["quality"] is None else row["quality"]
        print(f"[{number}/{len(todo)}] {row['pattern']:<24} {row['steps']:>4} steps  quality "
              f"{quality:.3f}  {row['status']}  ({row['seconds']:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("record", "simulate"))
    parser.add_argument("--out", default=str(RESULTS), help=f"results file (default {RESULTS})")
    parser.add_argument("--rungs", default=",".join(map(str, RUNGS)),
                        help="rung budgets in steps (default 30,90,270)")
    parser.add_argument("--eta", type=int, default=3, help="simulate: promotion factor")
    parser.add_argument("--workers", type=int, default=4, help="simulate: K workers")
    parser.add_argument("--seeds", type=int, default=30, help="simulate: seeds per strategy")
    parser.add_argument("--budget-fraction", type=float, default=0.5,
                        help="simulate: compute cap as a fraction of training the whole table "
                             "at the full budget (default 0.5)")
    parser.add_argument("--strategies", default="random-full,nsga2-full,sh-random,sh-nsga2,"
                        "sh-tpe", help="simulate: comma-separated")
    parser.add_argument("--continue-cost", action="store_true",
                        help="simulate: a promotion costs only the steps beyond its parent's "
                             "checkpoint (exact continuation) instead of a retrain")
    parser.add_argument("--decay", type=float, default=0.2,
                        help="simulate, --continue-cost: the fraction of each rung that the wsd "
                             "schedule decays over, trained again by a continued promotion "
                             "(default 0.2, what hnas search --fidelity sh uses; 0: none)")
    parser.add_argument("--architectures", type=int, help="simulate: only the first N "
                        "architectures recorded (default: every one with all its rungs)")
    parser.add_argument("--plot", metavar="PNG", help="simulate: hypervolume against compute")
    parser.add_argument("--table", metavar="TXT", help="simulate: write the table here too")
    args = parser.parse_args(argv)
    try:
        args.rungs = tuple(int(part) for part in args.rungs.split(","))
        args.strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
        if args.mode == "record":
            record(args)
        else:
            from benchmarks.replay_sim import simulate_main

            simulate_main(args)
    except (BenchError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")


if __name__ == "__main__":
    main()
