"""Does the proxy score rank architectures the way the literature does, and stably?

Trains every preset architecture at equal width on a suite (MQAR and the MAD tasks), at a base
step budget and at a multiple of it, at each learning rate of `--lrs`, then prints:

- the suite quality of every preset at both budgets, each task scored at its best learning
  rate (MAD's protocol, with run_trial's rule for a sweep: one fixed rate misranks
  architectures whose best rates differ; jamba and zamba learned in-context recall within 200
  steps at 1e-3 and not at 3e-3);
- the recall ordering check: attention and the attention hybrids (transformer, jamba, zamba,
  griffin, stripedhyena) should score above the attention-free mixers (mamba, mamba2, hawk) on
  the recall tasks (MQAR, in-context, noisy and fuzzy recall: the mean accuracy over those of
  the suite's tasks) at small width;
- the Spearman rank correlation of the presets' quality between the two budgets (goal >= 0.8).
  A preset that failed (NaN loss, out of memory) at either budget is left out and named.

    python benchmarks/proxy_ranking.py --suite mqar --steps 100 --multiple 8 --lrs 1e-3 3e-3
    python benchmarks/proxy_ranking.py --suite quick --steps 50 --presets transformer mamba jamba

Writes one JSON row per (preset, budget, learning rate) with --json-out, as each ends;
--summary-from merges the files of several runs (split presets, learning rates or --seed) into
one summary without training. Rows of several seeds are summarised on the seed means (each seed
at its best rate), with each seed's Spearman printed beside the means'. CPU-only runs at the
default sizes take a long time (every preset, every task, two budgets); --presets and --steps
trim them, and --threads 1 keeps a shared machine's load from slowing torch down (see
benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import spearman  # noqa: E402
from search_spaces import arch_names, load_arch  # noqa: E402
from trials.tasks import Suite, load_suite  # noqa: E402
from trials.train import Budget, run_trial  # noqa: E402
from trials.train.budget import DEFAULT_LR  # noqa: E402
from trials.train.run import run_rank  # noqa: E402

ATTENTION = ("transformer", "jamba", "zamba", "griffin", "stripedhyena")
ATTENTION_FREE = ("mamba", "mamba2", "hawk")
RECALL_TASKS = ("mqar", "in_context_recall", "noisy_recall", "fuzzy_recall")


def recall_score(suite: Suite, accuracies: dict[str, float | None]) -> float:
    """Mean accuracy over the suite's recall tasks (NaN if the suite has none or one failed)."""
    names = [entry.name for entry in suite if entry.task.kind in RECALL_TASKS]
    values = [accuracies.get(name) for name in names]
    if not values or any(value is None for value in values):
        return float("nan")
    return sum(values) / len(values)


def ordering(scores: dict[str, float]) -> str:
    """Whether every attention preset scores above every attention-free one (NaN: left out)."""
    trained = [name for name, value in scores.items() if not math.isnan(value)]
    with_attention = [scores[n] for n in trained if n in ATTENTION]
    without = [scores[n] for n in trained if n in ATTENTION_FREE]
    if not (with_attention and without):
        return "not checked (needs presets of both kinds)"
    holds = min(with_attention) > max(without)
    mean_gap = sum(with_attention) / len(with_attention) - sum(without) / len(without)
    return (f"{'yes' if holds else 'no'} (min {min(with_attention):.3f} vs max "
            f"{max(without):.3f}; mean gap {mean_gap:+.3f})")


def train_rows(suite: Suite, presets: list[str], budgets: tuple[int, int],
               args: argparse.Namespace) -> list[dict]:
    """Train every preset at both budgets and every learning rate; one row per (preset, budget,
    learning rate), printed as it ends.

    With --json-out each row is also appended to that file as it ends, so that a run stopped
    after hours keeps what it measured (--summary-from reads what is there).
    """
    rows = []
    if args.json_out:
        open(args.json_out, "w").close()
    for steps, lr in itertools.product(budgets, args.lrs):
        # One learning-curve point (the end): the curve is not used here, and every point
        # would cost a pass over the test set.
        budget = Budget(steps=steps, batch_size=args.batch_size, lr=lr, decode_context=0,
                        eval_every=steps)
        for name in presets:
            arch = load_arch(name, d_model=args.d_model)
            started = time.perf_counter()
            result = run_trial(arch, suite, budget, seed=args.seed)
            accuracies = {t: r.metrics.get("accuracy") for t, r in result.tasks.items()}
            losses = {t: r.metrics.get("loss") for t, r in result.tasks.items()}
            rows.append({"preset": name, "pattern": arch.pattern, "suite": suite.name,
                         "steps": steps, "batch_size": args.batch_size, "lr": lr,
                         "d_model": args.d_model, "seed": args.seed,
                         "quality": result.quality if result.ok else None,
                         "status": result.status, "failure": result.failure,
                         "accuracy": accuracies, "loss": losses,
                         "seconds": time.perf_counter() - started})
            if args.json_out:
                with open(args.json_out, "a") as handle:
                    handle.write(json.dumps(rows[-1]) + "\n")
            failure = "" if result.ok else f"  FAILED: {result.failure}"
            quality = result.quality if result.ok else float("nan")
            print(f"{steps:>5} steps  lr {lr:g}  {name:<13} quality {quality:.3f}  " +
                  "  ".join(f"{t} {a:.3f}" for t, a in accuracies.items() if a is not None) +
                  f"  ({rows[-1]['seconds']:.0f} s){failure}", flush=True)
    return rows


def best_over_learning_rates(rows: list[dict], suite: Suite) -> dict[tuple[str, int, int], dict]:
    """One row per (preset, steps, seed): each task's best accuracy over the learning rates
    tried, as MAD scores an architecture (the best of a small learning-rate sweep per task), and
    the suite quality of those. Failed runs count only when every learning rate failed."""
    groups: dict[tuple[str, int, int], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["preset"], row["steps"], row["seed"]), []).append(row)
    combined = {}
    for key, group in groups.items():
        lrs = sorted({row["lr"] for row in group})
        trained = [row for row in group if row["status"] == "ok"]
        if not trained:
            combined[key] = {**group[0], "lrs": lrs, "best_lr": {}}
            continue
        accuracy, best_lr = {}, {}
        for entry in suite:
            # run_trial's rule for a sweep; rows written before losses were saved tie on loss.
            best = max(trained, key=lambda row: run_rank(
                {"accuracy": row["accuracy"][entry.name],
                 "loss": row.get("loss", {}).get(entry.name, float("inf"))}))
            accuracy[entry.name], best_lr[entry.name] = best["accuracy"][entry.name], best["lr"]
        combined[key] = {**trained[0], "accuracy": accuracy, "quality": _quality(suite, accuracy),
                         "lrs": lrs, "best_lr": best_lr}
    return combined


def mean_over_seeds(per_seed: dict[tuple[str, int, int], dict],
                    suite: Suite) -> dict[tuple[str, int], dict]:
    """One row per (preset, steps): each task's accuracy averaged over the seeds (each seed at
    its best learning rate), failed if any seed failed. `best_lr` lists every seed's winner."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for (preset, steps, _), row in sorted(per_seed.items()):
        groups.setdefault((preset, steps), []).append(row)
    means = {}
    for key, group in groups.items():
        lrs = sorted({lr for row in group for lr in row["lrs"]})
        seeds = [row["seed"] for row in group]
        if any(row["status"] != "ok" for row in group):
            failed = next(row for row in group if row["status"] != "ok")
            means[key] = {**failed, "lrs": lrs, "seeds": seeds, "best_lr": {}}
            continue
        accuracy = {entry.name: sum(row["accuracy"][entry.name] for row in group) / len(group)
                    for entry in suite}
        best_lr = {entry.name: [row["best_lr"][entry.name] for row in group] for entry in suite}
        means[key] = {**group[0], "accuracy": accuracy, "quality": _quality(suite, accuracy),
                      "lrs": lrs, "seeds": seeds, "best_lr": best_lr}
    return means


def _quality(suite: Suite, accuracy: dict[str, float]) -> float:
    return suite.quality({name: {"accuracy": value} for name, value in accuracy.items()})


def _best_lrs(row: dict) -> str:
    return ", ".join("/".join(f"{lr:g}" for lr in winners)
                     for winners in row["best_lr"].values()) or "failed"


def rank_agreement(quality: dict[int, dict[str, float]], budgets: tuple[int, int],
                   presets: list[str], multiple: int, label: str = "") -> None:
    """The Spearman line: quality ranks at the two budgets, over presets that trained at both."""
    base, long = budgets
    ranked = [n for n in presets
              if not (math.isnan(quality[base][n]) or math.isnan(quality[long][n]))]
    left_out = [n for n in presets if n not in ranked]
    note = f"; left out (failed): {', '.join(left_out)}" if left_out else ""
    if len(ranked) < 2:
        print(f"Spearman rank correlation{label}: needs two presets that trained at both "
              f"budgets{note}")
        return
    rho = spearman([quality[base][n] for n in ranked], [quality[long][n] for n in ranked])
    verdict = "PASS" if rho >= 0.8 else "MISS"
    print(f"Spearman rank correlation of quality{label}, 1x vs {multiple}x over "
          f"{len(ranked)} presets: {rho:.3f} (goal >= 0.8: {verdict}){note}")


def summarize(rows: list[dict], suite: Suite, presets: list[str], budgets: tuple[int, int],
              multiple: int) -> None:
    """The quality table, the recall ordering checks and the Spearman correlation; with rows
    of several seeds, all of them on the seed means, and the Spearman of each seed as well."""
    nan = float("nan")
    per_seed = best_over_learning_rates(rows, suite)
    by_key = mean_over_seeds(per_seed, suite)
    seeds = sorted({seed for (_, _, seed) in per_seed}) or [0]
    missing = [f"{p}@{s} seed {seed}" for p in presets for s in budgets for seed in seeds
               if (p, s, seed) not in per_seed]
    if missing:
        raise SystemExit(f"no rows for {', '.join(missing)} (every preset needs every seed)")
    ok = {key: row["status"] == "ok" for key, row in by_key.items()}
    quality = {s: {p: by_key[p, s]["quality"] if ok[p, s] else nan for p in presets}
               for s in budgets}
    recall = {s: {p: recall_score(suite, by_key[p, s]["accuracy"]) if ok[p, s] else nan
                  for p in presets} for s in budgets}
    recall_tasks = [e.name for e in suite if e.task.kind in RECALL_TASKS]
    (base, long), labels = budgets, ("1x", f"{multiple}x")

    if len(seeds) > 1:
        print(f"\nmeans over seeds {', '.join(map(str, seeds))} (each seed at its best rate)")
    print(f"\npreset         quality@1x  quality@{multiple}x  recall@1x  recall@{multiple}x  "
          "learning rates tried: best per task at 1x / at 8x")
    for name in presets:
        tried = ", ".join(f"{lr:g}" for lr in by_key[name, base]["lrs"])
        print(f"{name:<13} {quality[base][name]:>10.3f} {quality[long][name]:>11.3f} "
              f"{recall[base][name]:>10.3f} {recall[long][name]:>10.3f}  {tried}: "
              f"{_best_lrs(by_key[name, base])} / {_best_lrs(by_key[name, long])}")
    for label, steps in zip(labels, budgets):
        if not recall_tasks:
            print(f"recall ordering at {label}: not checked (the suite has no recall task)")
            continue
        print(f"recall ordering at {label}: attention presets above attention-free: "
              f"{ordering(recall[steps])}")
        if len(recall_tasks) > 1:
            for task in recall_tasks:
                scores = {p: by_key[p, steps]["accuracy"].get(task) if ok[p, steps] else None
                          for p in presets}
                scores = {p: nan if v is None else v for p, v in scores.items()}
                print(f"  on {task} alone: {ordering(scores)}")
    if len(seeds) > 1:
        for seed in seeds:
            seed_quality = {s: {p: per_seed[p, s, seed]["quality"]
                                if per_seed[p, s, seed]["status"] == "ok" else nan
                                for p in presets} for s in budgets}
            rank_agreement(seed_quality, budgets, presets, multiple, f" (seed {seed})")
    rank_agreement(quality, budgets, presets, multiple,
                   " (seed means)" if len(seeds) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="mqar")
    parser.add_argument("--presets", nargs="*", default=arch_names())
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--multiple", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lrs", type=float, nargs="+", default=[DEFAULT_LR], metavar="LR",
                        help="peak learning rates: every preset trains at each, and each "
                             f"task scores its best (MAD's protocol); default {DEFAULT_LR:g}, "
                             "the training budget's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--json-out", help="write one JSON row per (preset, budget) here")
    parser.add_argument("--summary-from", metavar="JSON", nargs="+",
                        help="train nothing: print the summary of the rows of earlier "
                             "--json-out files (same --suite, --steps, --multiple; runs that "
                             "split --presets, --lrs or --seed between them are merged)")
    args = parser.parse_args()
    if args.threads is not None:
        if args.threads < 1:
            parser.error(f"--threads: expected a positive integer, got {args.threads}")
        torch.set_num_threads(args.threads)
    unknown = [name for name in args.presets if name not in arch_names()]
    if unknown:
        parser.error(f"--presets: unknown preset {unknown[0]!r} (valid: {', '.join(arch_names())})")

    suite = load_suite(args.suite)
    budgets = (args.steps, args.steps * args.multiple)
    if args.summary_from:
        rows = []
        for path in args.summary_from:
            with open(path) as handle:
                rows += [json.loads(line) for line in handle if line.strip()]
        print(f"suite {suite.name}: summary of {', '.join(args.summary_from)} ({len(rows)} rows)")
    else:
        print(f"suite {suite.name}: {', '.join(e.name for e in suite)}; d_model {args.d_model}; "
              f"batch {args.batch_size}; budgets {budgets[0]} and {budgets[1]} steps; "
              f"{torch.get_num_threads()} threads")
        rows = train_rows(suite, args.presets, budgets, args)
    summarize(rows, suite, args.presets, budgets, args.multiple)


if __name__ == "__main__":
    main()
