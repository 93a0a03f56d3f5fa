"""Where does a recall task leave chance? Learning curves of a few architectures on one MQAR size.

    python benchmarks/calibrate.py --seq-len 64 --pairs 8 --vocab 64 --steps 400 --lr 3e-3 \
        --archs transformer mamba griffin hawk mamba2
    python benchmarks/calibrate.py --seq-len 64 --pairs 4 --vocab 64 --steps 800 --archs "M*2" "A*2"

Before a fidelity run spends hours on a suite, its sizes must be ones that a short budget can
tell apart: if every candidate is still at chance after the 1x budget, the 1x score ranks noise
(the 256x32 `capacity` preset at 200 steps did). Each name is a preset (at `--d-model`) or a
pattern (built at `--d-model` without FFNs, as Zoology's 2-layer models are). Every run scores the
test set `--points` times on the way and appends one row, with that curve, to the results file
(default benchmarks/results/calibration_probes.jsonl); a restart skips the runs already there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BenchError, ResultsFile, one_thread  # noqa: E402
from search_spaces import ArchConfig, arch_names, load_arch  # noqa: E402

KEY = ("arch", "seq", "pairs", "vocab", "steps", "lr", "seed", "d_model", "batch")


def build(name: str, d_model: int) -> ArchConfig:
    if name in arch_names():
        return load_arch(name, d_model=d_model)
    return ArchConfig.from_pattern(name, d_model=d_model, ffn="none")


def train(run: dict, points: int) -> dict:
    from trials.tasks import MQAR, Suite, SuiteEntry
    from trials.train import Budget, run_trial

    task = MQAR(seq_len=run["seq"], num_kv_pairs=run["pairs"], vocab_size=run["vocab"])
    suite = Suite(f"calibrate_{task.label}", (SuiteEntry(task, n_train=32768, n_test=512),))
    budget = Budget(steps=run["steps"], batch_size=run["batch"], lr=run["lr"], decode_context=0,
                    eval_every=max(1, run["steps"] // points))
    started = time.perf_counter()
    result = run_trial(build(run["arch"], run["d_model"]), suite, budget, seed=run["seed"])
    curve = [(point["step"], round(point["accuracy"], 4), round(point["loss"], 4))
             for task_result in result.tasks.values() for point in task_result.curve]
    return {**run, "q": result.quality if result.ok else None, "failure": result.failure,
            "curve": curve, "s": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", required=True, help="presets or patterns")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=64)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--points", type=int, default=8, help="curve points per run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" /
                                             "calibration_probes.jsonl"))
    args = parser.parse_args(argv)
    try:
        for name in args.archs:
            build(name, args.d_model)
        if min(args.steps, args.points, args.batch_size) < 1:
            raise BenchError(f"--steps, --points and --batch-size must be >= 1, got "
                             f"{args.steps}, {args.points}, {args.batch_size}")
    except ValueError as error:  # BenchError and every pattern or preset error
        parser.exit(2, f"calibrate.py: error: {error}\n")
    results = ResultsFile(args.out, KEY)
    runs = [{"arch": name, "seq": args.seq_len, "pairs": args.pairs, "vocab": args.vocab,
             "steps": args.steps, "lr": args.lr, "seed": args.seed, "d_model": args.d_model,
             "batch": args.batch_size}
            for name in args.archs]
    one_thread()
    rows = []
    for run in results.pending(runs):
        row = train(run, args.points)
        results.append(row)
        rows.append(row)
        print(f"{row['arch']:<12} MQAR {row['seq']}x{row['pairs']} vocab {row['vocab']} "
              f"batch {row['batch']} lr {row['lr']:g}: " +
              " ".join(f"{step}:{acc:.3f}" for step, acc, _ in row["curve"]) +
              f"  ({row['s']:.0f} s)", flush=True)
    return rows


if __name__ == "__main__":
    main()
