"""Recall against state size at CPU scale: Zoology's capacity result and the attention ratio.

    python benchmarks/capacity.py pairs [--shard 0/2] ...   # MQAR accuracy vs key-value pairs
    python benchmarks/capacity.py ratio [--shard 0/2] ...   # (M*k A) stacks vs attention ratio
    python benchmarks/capacity.py pairs --table [--plot capacity_pairs.png]   # no training

`pairs`: `A`, `M`, `M2`, `R` and `H` models of equal depth (default 2, as in Zoology) and width,
plus `L2 A` (see EXTRA_PATTERNS), on MQAR at one length (default 64 tokens, vocabulary 64) with
4, 8, 12 and 16 key-value pairs (16 is the most 64 tokens hold). The width and state sizes are
small on purpose, so that each recurrent state overflows inside that range: at d_model 32 a pair
is about 2 x 32 values, and each layer holds RG-LRU 32 values (its width), Mamba 256 (d_state
4 x 64 channels) and Mamba-2 512 (d_state 8 x 64), i.e. well under 4, about 4 and about 8
pairs, while Hyena's long convolution and attention keep the whole sequence. Expected: the
recurrent mixers fall in that order, attention and Hyena stay high.

Fewer than 4 pairs measure learning, not memory: at 2 pairs every model, including `R*2`,
stopped at 0.52-0.71, since an example scores 8 times fewer positions than at 16 pairs and at
vocabulary 64 each key reappears in the noise about once per sequence (the first sweep's rows,
capacity_pairs.jsonl, `--pairs 2 --m2-d-state 16`).

The CPU-scale budget: 800 steps of 256 examples at lr 3e-3. Batches of 256 are what make the
task learnable in minutes on one core: `L2 A` at 64x16 reached 0.992 after 200 such steps and
1.0 after 400, while at 128x32 with batches of 32 it was at 0.218 after 1500
(benchmarks/results/calibration_probes.jsonl).

`ratio`: `(M*k A)` stacks of equal depth (default 8) at the attention ratios 0, 1/16, 1/8, 1/4,
1/2 and 1 that the depth can hold (1/16 needs `--depth 16`, at twice the cost) on one MQAR
setting (default 64 tokens, 16 pairs), each with the cost model's inference cache at 128K
tokens (bf16) beside its accuracy.

Each finished run appends one JSON row to the results file (default
benchmarks/results/capacity_<experiment>.jsonl), keyed by every setting and the seed; a restart
skips the runs already there, and `--shard i/n` gives this process every n-th run from
the i-th (of the full run list, so that the split does not depend on what is done), so two
processes (one per core, one torch thread each) split the work. `--table`
trains nothing and prints the table of the rows; `--plot PNG` draws them.
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (BenchError, ResultsFile, add_run_options,  # noqa: E402
                               estimate_hours, one_thread, parse_shard, print_estimate, run_key,
                               shard, work)
from search_spaces import ArchConfig  # noqa: E402
from search_spaces.cost import estimate  # noqa: E402

RESULTS = Path(__file__).parent / "results"
MIXERS = ("A", "M", "M2", "R", "H")
# Global attention finds the previous-token head MQAR needs only through RoPE, late (a phase
# transition): tests/test_mqar_learning.py measured `A A` at 0.3-0.45 on MQAR 64x4 after
# 600-1500 steps, while `L2 A` (a 2-token window first) learns it within 800. The recurrent
# mixers get that head from their short convolution. `L2 A` is run beside `A*2` so that a
# low attention row can be told apart from the short budget.
EXTRA_PATTERNS = ("L2 A",)
RATIOS = ("0", "1/16", "1/8", "1/4", "1/2", "1")
# Every setting that changes a run's outcome: the key of its row.
KEY = ("experiment", "pattern", "seq_len", "pairs", "vocab_size", "d_model", "d_state",
       "m2_d_state", "m2_head_dim", "steps", "batch_size", "lrs", "n_train", "n_test", "seed")
CONTEXT_128K = 131072


def ratio_pattern(ratio: Fraction, depth: int) -> str:
    """`(M*(k-1) A)*(depth/k)` for ratio 1/k; `M*depth` at 0 and `A*depth` at 1."""
    if ratio == 0:
        return f"M*{depth}"
    if ratio == 1:
        return f"A*{depth}"
    if ratio.numerator != 1 or depth % ratio.denominator:
        raise BenchError(f"--ratios: {ratio} is not 1/k with k dividing --depth {depth}")
    k = ratio.denominator
    block = "M A" if k == 2 else f"M*{k - 1} A"
    return f"({block})*{depth // k}"


def parse_ratio(text: str) -> Fraction:
    try:
        ratio = Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise BenchError(f"--ratios: expected a fraction such as 1/8, got {text!r}") from None
    if not 0 <= ratio <= 1:
        raise BenchError(f"--ratios: {text} is outside [0, 1]")
    return ratio


def build_arch(run: dict) -> ArchConfig:
    return ArchConfig.from_pattern(run["pattern"], d_model=run["d_model"], d_state=run["d_state"],
                                   m2_d_state=run["m2_d_state"], m2_head_dim=run["m2_head_dim"],
                                   vocab_size=run["vocab_size"])


def planned_runs(args: argparse.Namespace) -> list[dict]:
    """Every run of the experiment in a fixed order (seed, then the swept setting, then the
    pattern), so that every process computes the same list and its shard of it."""
    common = {"experiment": args.experiment, "seq_len": args.seq_len, "vocab_size": args.vocab,
              "d_model": args.d_model, "d_state": args.d_state, "m2_d_state": args.m2_d_state,
              "m2_head_dim": args.m2_head_dim, "steps": args.steps,
              "batch_size": args.batch_size, "lrs": list(args.lrs), "n_train": args.n_train,
              "n_test": args.n_test}
    runs = []
    for seed in args.seeds:
        if args.experiment == "pairs":
            for pairs in args.pairs:
                for pattern in [f"{m}*{args.depth}" for m in args.mixers] + args.patterns:
                    runs.append({**common, "pattern": pattern, "pairs": pairs, "seed": seed})
        else:
            for text in args.ratios:
                ratio = parse_ratio(text)
                runs.append({**common, "pattern": ratio_pattern(ratio, args.depth),
                             "ratio": str(ratio), "pairs": args.pairs[0], "seed": seed})
    for run in runs:
        try:
            depth = len(build_arch(run).layers)  # validate every run before the first trains
        except ValueError as error:
            raise BenchError(f"{run['pattern']}: {error}") from None
        if depth != args.depth:
            raise BenchError(f"--patterns: {run['pattern']!r} has {depth} layers, not --depth "
                             f"{args.depth}")
        _check_task(run)
    return runs


def _check_task(run: dict) -> None:
    from trials.tasks.base import TaskError
    from trials.tasks.mqar import MQAR

    try:
        MQAR(seq_len=run["seq_len"], num_kv_pairs=run["pairs"], vocab_size=run["vocab_size"])
    except TaskError as error:
        raise BenchError(f"--pairs {run['pairs']}: {error}") from None


def train_one(run: dict) -> dict:
    """Train one run and return its row (the run's settings plus what was measured)."""
    from trials.tasks import Suite, SuiteEntry
    from trials.tasks.mqar import MQAR
    from trials.train import Budget, run_trial

    arch = build_arch(run)
    task = MQAR(seq_len=run["seq_len"], num_kv_pairs=run["pairs"], vocab_size=run["vocab_size"])
    suite = Suite(f"capacity-{run['experiment']}", (
        SuiteEntry(task, n_train=run["n_train"], n_test=run["n_test"]),))
    budget = Budget(steps=run["steps"], batch_size=run["batch_size"], lr=tuple(run["lrs"]),
                    decode_context=0, eval_every=max(1, run["steps"] // 5))
    started = time.perf_counter()
    result = run_trial(arch, suite, budget, seed=run["seed"])
    task_result = result.tasks.get(task.label)
    metrics = task_result.metrics if task_result else {}
    return {**run, **state_sizes(arch, run["seq_len"]), "status": result.status,
            "failure": result.failure, "accuracy": metrics.get("accuracy"),
            "loss": metrics.get("loss"), "best_lr": task_result.lr if task_result else None,
            "curve": [(point["step"], point["accuracy"]) for point in task_result.curve]
            if task_result else [],
            "sweep": [{k: v for k, v in entry.items() if k in ("lr", "accuracy", "loss")}
                      for entry in task_result.sweep] if task_result else [],
            "seconds": round(time.perf_counter() - started, 2)}


def state_sizes(arch: ArchConfig, seq_len: int) -> dict:
    """The cost model's inference state: at the task's length (fp32, as trained) and at 128K
    tokens (bf16), with the parameter count."""
    at_task = estimate(arch, context=seq_len, dtype="fp32")
    return {"params": at_task.params, "state_bytes": at_task.cache_bytes,
            "cache_bytes_128k": estimate(arch, context=CONTEXT_128K, dtype="bf16").cache_bytes}


# -- reporting ----------------------------------------------------------------------------------

def _mean_accuracy(rows: list[dict]) -> dict[tuple, tuple[float, int]]:
    """(pattern, pairs) -> (mean accuracy over seeds, number of seeds); failed runs count 0."""
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row["pattern"], row["pairs"]), []).append(row["accuracy"] or 0.0)
    return {key: (sum(v) / len(v), len(v)) for key, v in groups.items()}


def table(rows: list[dict], experiment: str) -> str:
    if not rows:
        return "no rows yet"
    means = _mean_accuracy(rows)
    sizes = {row["pattern"]: row for row in rows}
    if experiment == "pairs":
        pairs = sorted({row["pairs"] for row in rows})
        lines = [f"{'model':<8} {'state B @len':>12}  " +
                 "  ".join(f"{p:>4}kv" for p in pairs) + "   (MQAR accuracy, mean over seeds)"]
        for pattern in sorted(sizes, key=lambda p: sizes[p]["state_bytes"]):
            cells = [f"{means[pattern, p][0]:>6.3f}" if (pattern, p) in means else f"{'-':>6}"
                     for p in pairs]
            lines.append(f"{pattern:<8} {sizes[pattern]['state_bytes']:>12,}  " + "  ".join(cells))
        return "\n".join(lines)
    first = rows[0]
    attention = build_arch({**first, "pattern": f"A*{len(build_arch(first).layers)}"})
    full = estimate(attention, context=CONTEXT_128K, dtype="bf16").cache_bytes
    lines = [f"{'ratio':>6}  {'pattern':<16} {'accuracy':>8} {'seeds':>5}  "
             f"{'cache @128K':>14} {'vs all-A':>8}"]
    for row in sorted(sizes.values(), key=lambda r: Fraction(r["ratio"])):
        accuracy, count = means[row["pattern"], row["pairs"]]
        lines.append(f"{row['ratio']:>6}  {row['pattern']:<16} {accuracy:>8.3f} {count:>5}  "
                     f"{row['cache_bytes_128k']:>14,} {row['cache_bytes_128k'] / full:>8.3f}")
    return "\n".join(lines)


def plot(rows: list[dict], experiment: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    means = _mean_accuracy(rows)
    figure, axis = plt.subplots(figsize=(6.4, 4.2))
    if experiment == "pairs":
        for pattern in sorted({r["pattern"] for r in rows}):
            state = next(r["state_bytes"] for r in rows if r["pattern"] == pattern)
            points = sorted((p, m) for (pat, p), (m, _) in means.items() if pat == pattern)
            axis.plot([p for p, _ in points], [m for _, m in points], marker="o",
                      label=f"{pattern} (state {state:,} B)")
        axis.set_xscale("log", base=2)
        axis.set_xlabel("key-value pairs")
        axis.set_title(f"MQAR recall vs pairs (len {rows[0]['seq_len']}, "
                       f"d_model {rows[0]['d_model']})")
    else:
        ordered = sorted({r["ratio"]: r for r in rows}.values(), key=lambda r: Fraction(r["ratio"]))
        xs = range(len(ordered))
        axis.plot(xs, [means[r["pattern"], r["pairs"]][0] for r in ordered], marker="o",
                  color="C0", label="MQAR accuracy")
        axis.set_xticks(list(xs), [r["ratio"] for r in ordered])
        axis.set_xlabel("attention ratio")
        twin = axis.twinx()
        twin.bar(xs, [r["cache_bytes_128k"] / 2**20 for r in ordered], alpha=0.25, color="C1")
        twin.set_yscale("log")
        twin.set_ylabel("inference cache at 128K, MiB (bars)")
        axis.set_zorder(twin.get_zorder() + 1)  # the accuracy line above the bars
        axis.patch.set_visible(False)
        depth = len(build_arch(ordered[0]).layers)
        axis.set_title(f"(M*k A) at depth {depth}, MQAR {rows[0]['seq_len']}x{rows[0]['pairs']}")
    axis.set_ylabel("test accuracy (mean over seeds)")
    axis.set_ylim(0, 1.05)
    axis.legend(loc="lower left", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# -- command line -------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=("pairs", "ratio"))
    parser.add_argument("--mixers", nargs="*", default=list(MIXERS),
                        help="pairs: each as a stack of --depth layers")
    parser.add_argument("--patterns", nargs="*", default=list(EXTRA_PATTERNS),
                        help="pairs: more models, as patterns of --depth layers (default: L2 A)")
    parser.add_argument("--pairs", type=int, nargs="+",
                        help="key-value pairs (pairs: default 4 8 12 16; ratio: one, "
                             "default 16)")
    parser.add_argument("--ratios", nargs="+",
                        help="ratio: the ratios (default: those of 0 1/16 1/8 1/4 1/2 1 that "
                             "--depth can hold)")
    parser.add_argument("--depth", type=int, help="layers (default 2 for pairs, 8 for ratio)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=64)
    parser.add_argument("--d-model", type=int, default=32)
    parser.add_argument("--d-state", type=int, default=4, help="Mamba's d_state")
    parser.add_argument("--m2-d-state", type=int, default=8)
    parser.add_argument("--m2-head-dim", type=int, default=16)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-3],
                        help="peak learning rates; with several, each run scores its best "
                             "(MAD's protocol) at that many times the cost")
    parser.add_argument("--n-train", type=int, default=65536)
    parser.add_argument("--n-test", type=int, default=512)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    add_run_options(parser, "benchmarks/results/capacity_<experiment>.jsonl",
                    "draw the rows to this PNG at the end")
    parser.add_argument("--table", action="store_true", help="train nothing; print the table")
    args = parser.parse_args(argv)
    args.depth = args.depth or (2 if args.experiment == "pairs" else 8)
    args.pairs = args.pairs or ([4, 8, 12, 16] if args.experiment == "pairs" else [16])
    args.ratios = args.ratios or [r for r in RATIOS if args.depth > 0 and
                                  args.depth % Fraction(r).denominator == 0]
    args.out = args.out or str(RESULTS / f"capacity_{args.experiment}.jsonl")
    try:
        if args.experiment == "ratio" and len(args.pairs) != 1:
            raise BenchError(f"--pairs: ratio takes one value, got {len(args.pairs)}")
        unknown = [m for m in args.mixers if m not in MIXERS]
        if unknown:
            raise BenchError(f"--mixers: unknown mixer {unknown[0]!r} (valid: {', '.join(MIXERS)})")
        for name in ("depth", "seq_len", "vocab", "d_model", "steps", "batch_size", "n_train",
                     "n_test"):
            if getattr(args, name) < 1:
                raise BenchError(f"--{name.replace('_', '-')}: expected a positive integer, "
                                 f"got {getattr(args, name)}")
        args.shard = parse_shard(args.shard)
        args.runs = planned_runs(args)
    except BenchError as error:
        parser.exit(2, f"capacity.py: error: {error}\n")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = ResultsFile(args.out, KEY)
    if args.estimate:
        one_thread()
        done = results.done()
        costs, hours = estimate_hours(
            args.runs, lambda run: train_one(run)["seconds"], group=lambda run: run["pattern"],
            shards=args.shard[1], todo=lambda run: run_key(run, KEY) not in done)
        print_estimate(hours, f"{args.experiment}, {len(args.runs) - len(done)} runs")
        return
    if not args.table:
        one_thread()
        todo = results.pending(shard(args.runs, *args.shard))
        print(f"{args.experiment}: {len(args.runs)} runs, {len(todo)} pending in shard "
              f"{args.shard[0]}/{args.shard[1]}{', then the others' if args.steal else ''} -> "
              f"{args.out}", flush=True)
        for number, run in enumerate(work(results, args.runs, *args.shard, args.steal), 1):
            row = train_one(run)
            results.append(row)
            accuracy = float("nan") if row["accuracy"] is None else row["accuracy"]
            print(f"[{number}] {row['pattern']:<16} pairs {row['pairs']:>3} seed "
                  f"{row['seed']}  accuracy {accuracy:.3f}  {row['status']}  "
                  f"({row['seconds']:.0f} s)", flush=True)
    rows = results.rows_of(args.runs)
    print(table(rows, args.experiment))
    if args.plot and rows:
        plot(rows, args.experiment, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
