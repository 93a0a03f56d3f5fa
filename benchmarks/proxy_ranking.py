"""Does the proxy score rank architectures the way the literature does, and stably?

Trains every preset architecture at equal width on a suite (MQAR and the MAD tasks), at a base
step budget and at a multiple of it, then prints:

- per-task accuracy and the suite quality of every preset at both budgets;
- the recall ordering check: attention and the attention hybrids (transformer, jamba, zamba,
  griffin, stripedhyena) should score above the attention-free mixers (mamba, mamba2, hawk) on
  the recall tasks at small width;
- the Spearman rank correlation of the presets' quality between the two budgets (goal >= 0.8).

    python benchmarks/proxy_ranking.py --suite mqar --steps 100 --multiple 8
    python benchmarks/proxy_ranking.py --suite quick --steps 50 --presets transformer mamba jamba

Writes one JSON row per (preset, budget) with --json-out. CPU-only runs at the default sizes
take a long time (every preset, every task, two budgets); --presets and --steps trim them.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from search_spaces import arch_names, load_arch
from trials.tasks import load_suite
from trials.train import Budget, run_trial

ATTENTION = ("transformer", "jamba", "zamba", "griffin", "stripedhyena")
ATTENTION_FREE = ("mamba", "mamba2", "hawk")


def spearman(xs: list[float], ys: list[float]) -> float:
    """Rank correlation (average ranks for ties)."""

    def ranks(values: list[float]) -> list[float]:
        order = sorted(range(len(values)), key=lambda i: values[i])
        result = [0.0] * len(values)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
                j += 1
            for k in range(i, j + 1):
                result[order[k]] = (i + j) / 2
            i = j + 1
        return result

    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / var if var else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="mqar")
    parser.add_argument("--presets", nargs="*", default=arch_names())
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--multiple", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out")
    args = parser.parse_args()

    suite = load_suite(args.suite)
    print(f"suite {suite.name}: {', '.join(e.name for e in suite)}; d_model {args.d_model}; "
          f"budgets {args.steps} and {args.steps * args.multiple} steps; "
          f"{torch.get_num_threads()} threads")
    rows = []
    quality: dict[int, dict[str, float]] = {}
    for steps in (args.steps, args.steps * args.multiple):
        budget = Budget(steps=steps, batch_size=args.batch_size, lr=args.lr, decode_context=0)
        quality[steps] = {}
        for name in args.presets:
            arch = load_arch(name, d_model=args.d_model)
            started = time.perf_counter()
            result = run_trial(arch, suite, budget, seed=args.seed)
            accuracies = {t: r.metrics.get("accuracy") for t, r in result.tasks.items()}
            quality[steps][name] = result.quality if result.ok else float("nan")
            rows.append({"preset": name, "pattern": arch.pattern, "steps": steps,
                         "quality": result.quality, "status": result.status,
                         "failure": result.failure, "accuracy": accuracies,
                         "seconds": time.perf_counter() - started})
            print(f"{steps:>5} steps  {name:<13} quality {quality[steps][name]:.3f}  " +
                  "  ".join(f"{t} {a:.3f}" for t, a in accuracies.items() if a is not None) +
                  f"  ({rows[-1]['seconds']:.0f} s)", flush=True)

    base, long = quality[args.steps], quality[args.steps * args.multiple]
    print("\npreset         quality@1x  quality@%dx" % args.multiple)
    for name in args.presets:
        print(f"{name:<13} {base[name]:>10.3f} {long[name]:>11.3f}")
    for label, scores in (("1x", base), (f"{args.multiple}x", long)):
        with_attention = [scores[n] for n in args.presets if n in ATTENTION]
        without = [scores[n] for n in args.presets if n in ATTENTION_FREE]
        if with_attention and without:
            holds = min(with_attention) > max(without)
            mean_gap = sum(with_attention) / len(with_attention) - sum(without) / len(without)
            print(f"recall ordering at {label}: attention presets above attention-free: "
                  f"{'yes' if holds else 'no'} (min {min(with_attention):.3f} vs max "
                  f"{max(without):.3f}; mean gap {mean_gap:+.3f})")
    rho = spearman([base[n] for n in args.presets], [long[n] for n in args.presets])
    print(f"Spearman rank correlation 1x vs {args.multiple}x: {rho:.3f} (goal >= 0.8: "
          f"{'PASS' if rho >= 0.8 else 'MISS'})")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
