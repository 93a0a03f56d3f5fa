"""Does the cheap score rank architectures as a long budget does? Fidelity over a search's archs.

    python benchmarks/fidelity.py [--shard 0/2] ...     # train what has no row yet
    python benchmarks/fidelity.py --summary [--plot fidelity.png]   # train nothing

The architectures: every preset plus `--samples` draws from each of the `jamba_like` and `free`
spaces, all at one width (`--d-model`, default 64). The draws are deterministic: an Optuna
RandomSampler seeded with `--sample-seed`, with d_model fixed by a PartialFixedSampler, asked
until it gives a feasible candidate of at most `--max-layers` layers (default 16: the deepest
jamba_like draws cost several hours per reference run on one core) not already in the list. Each is trained on `--suite`
(default `capacity`) at the search's budget (`--steps`, 1x) and at `--multiple` times it (the
reference), over `--seeds` training seeds. Every finished run appends a JSON row (keyed by the
architecture's fingerprint, suite, steps, batch, learning rate, width and seed) to the results
file, default benchmarks/results/fidelity_<suite>.jsonl; a restart skips the runs already there
and `--shard i/n` splits the runs between processes.

The summary prints each architecture's score per seed at both budgets, then:
- the reference's self-agreement: Spearman between every two seeds of the reference (goal
  >= 0.85: below that the reference does not rank reproducibly and is no reference);
- fidelity: Spearman and Kendall's tau-b between the 1x score (each seed, and the seed mean)
  and the reference's seed mean (goal: Spearman >= 0.8).
They are computed from the rows alone in benchmarks/fidelity_report.py.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (BenchError, ResultsFile, add_run_options,  # noqa: E402
                               estimate_hours, one_thread, parse_shard, print_estimate, run_key,
                               shard, work)
from benchmarks.fidelity_report import plot, summarise  # noqa: E402
from search_spaces import ArchConfig, arch_names, load_arch, load_space  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SPACES = ("jamba_like", "free")
KEY = ("fingerprint", "suite", "steps", "schedule", "warmup_steps", "batch_size", "lr",
       "d_model", "seed")
# Rows written before the schedule and warm-up were part of the key: cosine, warm-up 10%.
KEY_DEFAULTS = {"schedule": "cosine", "warmup_steps": None}
# The `*_full` presets are published models at their published sizes, for `hnas cost`: some do
# not even build at a small width (nemotron_h's 8 groups need 8 Mamba-2 heads).
SMALL_PRESETS = [name for name in arch_names() if not name.endswith("_full")]


def draw_samples(space_name: str, count: int, d_model: int, seed: int, exclude: set[str],
                 max_layers: int | None = None) -> list[tuple[str, ArchConfig]]:
    """`count` feasible, distinct architectures from the space at `d_model` (and at most
    `max_layers` layers), the same every time for the same arguments."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    space = load_space(space_name)
    widths = space.dims["d_model"].values() if "d_model" in space.dims else ()
    if d_model not in widths:
        raise BenchError(f"--d-model {d_model}: the {space_name} space has widths "
                         f"{', '.join(map(str, widths))}")
    sampler = optuna.samplers.PartialFixedSampler(
        {"d_model": d_model}, optuna.samplers.RandomSampler(seed=seed))
    study = optuna.create_study(sampler=sampler)
    drawn: list[tuple[str, ArchConfig]] = []
    for _ in range(200 * count):
        if len(drawn) == count:
            break
        trial = study.ask()
        try:
            candidate = space.sample(trial)
        except ValueError:  # a combination of dims no model can have
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        arch = candidate.arch
        deep = max_layers is not None and len(arch.layers) > max_layers
        if candidate.feasible and not deep and arch.fingerprint() not in exclude:
            exclude.add(arch.fingerprint())
            drawn.append((f"{space_name}-{len(drawn)}", arch))
    if len(drawn) < count:
        raise BenchError(f"--samples: found {len(drawn)} feasible distinct {space_name} "
                         f"architectures at d_model {d_model} and <= {max_layers} layers, "
                         f"wanted {count}")
    return drawn


def architectures(args: argparse.Namespace) -> list[tuple[str, ArchConfig]]:
    archs = [(name, load_arch(name, d_model=args.d_model)) for name in args.presets]
    seen = {arch.fingerprint() for _, arch in archs}
    for space in args.spaces:
        archs += draw_samples(space, args.samples, args.d_model, args.sample_seed, seen,
                              args.max_layers)
    return archs


def planned_runs(args: argparse.Namespace, archs: list[tuple[str, ArchConfig]]) -> list[dict]:
    """1x runs of every seed first (cheap, and what a search sees), then the reference by
    seed, so that a partial file already answers part of the question; then the `--between`
    budgets (multiples of 1x), by budget and seed. They come last so that adding them leaves
    every earlier run's place, and so its shard, unchanged."""
    runs = []
    budgets = [(args.steps, "cosine", None, seed) for seed in args.seeds] + [
        (args.steps * args.multiple, "cosine", None, seed) for seed in args.seeds] + [
        (args.steps * factor, schedule, warmup, seed) for factor, schedule, warmup in args.between
        for seed in args.seeds]
    for (steps, schedule, warmup, seed), (name, arch) in itertools.product(budgets, archs):
        runs.append({"arch": name, "fingerprint": arch.fingerprint(), "pattern": arch.pattern,
                     "suite": args.suite, "steps": steps, "schedule": schedule,
                     "warmup_steps": warmup,
                     "batch_size": args.batch_size,
                     "lr": args.lr, "d_model": args.d_model, "seed": seed,
                     "config": arch.to_dict()})
    return runs


def train_one(run: dict, suite, curve_every: int | None = None) -> dict:
    """One run's row. `curve_every` steps, the test set is scored on the way (the reference
    runs record their accuracy at every multiple of the 1x budget: when each architecture
    leaves chance, and whether the order at 1x steps already is the final one)."""
    from trials.train import Budget, run_trial

    every = min(curve_every or run["steps"], run["steps"])
    budget = Budget(steps=run["steps"], batch_size=run["batch_size"], lr=run["lr"],
                    schedule=run["schedule"], warmup_steps=run["warmup_steps"],
                    decode_context=0, eval_every=every)
    started = time.perf_counter()
    result = run_trial(ArchConfig.from_dict(run["config"]), suite, budget, seed=run["seed"])
    return {**run, "suite_fingerprint": suite.fingerprint(), "status": result.status,
            "failure": result.failure, "quality": result.quality if result.ok else None,
            "accuracy": {name: task.metrics.get("accuracy") for name, task in result.tasks.items()},
            "loss": {name: task.metrics.get("loss") for name, task in result.tasks.items()},
            "curve": {name: [(point["step"], point["accuracy"], point["loss"])
                             for point in task.curve]
                      for name, task in result.tasks.items()},
            "seconds": round(time.perf_counter() - started, 2)}


def parse_between(text: str, multiple: int) -> tuple[int, str, int | None]:
    """`--between` item "N[:SCHEDULE[:WARMUP]]" -> (N, schedule, warm-up steps or None)."""
    from trials.train.budget import SCHEDULES

    parts = text.split(":")
    (factor, schedule, warmup), extra = (parts + ["", ""])[:3], parts[3:]
    schedule = schedule or "cosine"
    if extra or not factor.isdigit() or not 1 <= int(factor) < multiple:
        raise BenchError(f"--between: {text!r} is not N[:SCHEDULE[:WARMUP]] with N a whole "
                         f"multiple from 1 to under --multiple {multiple}")
    if schedule not in SCHEDULES:
        raise BenchError(f"--between: {text!r}: schedule {schedule!r} is not one of "
                         f"{', '.join(SCHEDULES)}")
    if warmup and not (warmup.isdigit() and int(warmup) > 0):
        raise BenchError(f"--between: {text!r}: the warm-up {warmup!r} is not a positive "
                         "number of steps")
    if int(factor) == 1 and schedule == "cosine" and not warmup:
        raise BenchError(f"--between: {text!r} is the 1x budget itself")
    return int(factor), schedule, int(warmup) if warmup else None


# -- command line -------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="capacity", help="a suite preset or YAML")
    parser.add_argument("--presets", nargs="*", default=SMALL_PRESETS)
    parser.add_argument("--spaces", nargs="*", default=list(SPACES))
    parser.add_argument("--samples", type=int, default=3, help="draws from each space")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--max-layers", type=int, default=16,
                        help="draw again when a sample is deeper (jamba_like reaches 32 layers, "
                             "at 1-3 s per step on one core)")
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--steps", type=int, default=200, help="the 1x budget")
    parser.add_argument("--multiple", type=int, default=8, help="the reference is this times 1x")
    parser.add_argument("--between", nargs="*", default=[], metavar="N[:SCHEDULE]",
                        help="more budgets, as multiples of 1x under --multiple, each "
                             "trained over every seed and compared with the reference; "
                             "`3:wsd` trains 3x with the warmup-stable-decay schedule instead "
                             "of cosine, `1:constant` 1x at the peak rate to the end, "
                             "`3:cosine:160` with a 160-step warm-up instead of 10%% "
                             "of the steps (1x and the reference are cosine, warm-up 10%%)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default: "
                                                               "the training budget's)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add_run_options(parser, "benchmarks/results/fidelity_<suite>.jsonl",
                    "draw 1x against the reference to this PNG")
    parser.add_argument("--summary", action="store_true", help="train nothing; summarise")
    args = parser.parse_args(argv)
    try:
        from trials.tasks import SuiteError, load_suite
        from trials.train.budget import DEFAULT_LR

        args.lr = DEFAULT_LR if args.lr is None else args.lr
        args.suite_object = load_suite(args.suite)
        args.suite = args.suite_object.name
        args.out = args.out or str(RESULTS / f"fidelity_{args.suite}.jsonl")
        unknown = [n for n in args.presets if n not in arch_names()]
        if unknown:
            raise BenchError(f"--presets: unknown preset {unknown[0]!r} "
                             f"(valid: {', '.join(arch_names())})")
        for name in ("samples", "max_layers", "d_model", "steps", "multiple", "batch_size"):
            if getattr(args, name) < (0 if name == "samples" else 1):
                raise BenchError(f"--{name.replace('_', '-')}: got {getattr(args, name)}")
        args.between = [parse_between(text, args.multiple) for text in args.between]
        if len(set(args.between)) != len(args.between):
            raise BenchError("--between: a budget is named twice")
        if len(set(args.seeds)) != len(args.seeds):
            raise BenchError(f"--seeds: a seed is named twice in {args.seeds}")
        args.shard = parse_shard(args.shard)
        args.archs = architectures(args)
    except (BenchError, SuiteError, ValueError) as error:
        parser.exit(2, f"fidelity.py: error: {error}\n")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    results = ResultsFile(args.out, KEY, KEY_DEFAULTS)
    runs = planned_runs(args, args.archs)
    print(f"{len(args.archs)} architectures at d_model {args.d_model}: " +
          ", ".join(f"{name} {arch.pattern}" for name, arch in args.archs))
    if args.estimate:
        one_thread()
        done = results.done()
        costs, hours = estimate_hours(
            runs, lambda run: train_one(run, args.suite_object)["seconds"],
            group=lambda run: f"{run['arch']} {run['pattern']}", shards=args.shard[1],
            todo=lambda run: run_key(run, KEY) not in done)
        print_estimate(hours, f"{len(runs) - len(done)} runs")
        return {"hours": hours}
    if not args.summary:
        one_thread()
        todo = results.pending(shard(runs, *args.shard))
        print(f"{len(runs)} runs, {len(todo)} pending in shard {args.shard[0]}/{args.shard[1]}"
              f"{', then the others' if args.steal else ''} -> {args.out}", flush=True)
        for number, run in enumerate(work(results, runs, *args.shard, args.steal), 1):
            row = train_one(run, args.suite_object, curve_every=args.steps)
            results.append(row)
            quality = float("nan") if row["quality"] is None else row["quality"]
            print(f"[{number}] {row['arch']:<14} {row['steps']:>5} steps seed "
                  f"{row['seed']}  quality {quality:.3f}  {row['status']}  "
                  f"({row['seconds']:.0f} s)", flush=True)
    rows = results.rows_of(runs)
    summary = summarise(rows, args.steps, args.multiple, args.between)
    print("\n".join(summary.lines()))
    if args.plot and rows:
        plot(rows, args.steps, args.multiple, args.plot)
        print(f"plot: {args.plot}")
    return summary.figures()


if __name__ == "__main__":
    main()
