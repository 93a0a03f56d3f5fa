"""The simulation half of benchmarks/replay.py: searches replayed on the recorded table.

Each architecture of the table has a quality at every rung budget and a measured training time
per step (its full-budget run's training seconds over its steps). A search with K workers is
simulated event by event: a free worker starts a job (a new candidate, or with successive
halving a promotion), which occupies it for steps x seconds-per-step of simulated time; when
it ends, its score is known to the search. Compute is the sum of the finished jobs' training
seconds. A promoted candidate is retrained at its rung's budget by default; `--continue-cost`
counts only the steps from its parent's checkpoint instead, the start of the rung below's decay
(`--decay`), which is what `hnas search --fidelity sh` now trains, to measure what continuing
saves. The scores stay the table's (retrained, cosine schedule) either way.

Strategies: `random-full` and `nsga2-full` (every candidate at the full budget; NSGA-II as
`hnas search --sampler nsga2` sets it up), `sh-random`, `sh-nsga2` and `sh-tpe` (asynchronous
successive halving over the rungs with nas.rungs' promotion rule, new candidates from random
draws or the sampler; the sampler is told every rung's result, as the study's trials tell it).

Hypervolume: of the candidates measured at the full budget so far, with their full-budget
scores, in the plane (quality, parameters / the table's largest parameter count), both
normalised so that the reference point (quality 0, parameters 1.0 of the largest) is fixed and
stated. Draws of architectures the table does not have (a partial table) are skipped at no cost.
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.rungs import Rungs, next_promotion

MAX_DRAWS = 20  # sampler draws per new candidate before a random new one is taken
STRATEGIES = ("random-full", "nsga2-full", "sh-random", "sh-nsga2", "sh-tpe")
REFERENCE = (0.0, 1.0)  # (quality, parameters / max parameters): worse than every point


@dataclass
class Arch:
    fingerprint: str
    pattern: str
    params: float  # normalised by the table's largest
    quality: dict[int, float]  # steps -> quality (a failed run scores 0)
    seconds_per_step: float


def load_table(rows: list[dict], rungs: tuple[int, ...],
               limit: int | None = None) -> dict[str, Arch]:
    """Architectures with a row at every rung budget (the first `limit` of them in the order
    they were recorded, so that a table still being recorded gives the same figures)."""
    by_fp: dict[str, dict[int, dict]] = {}
    for row in rows:
        by_fp.setdefault(row["fingerprint"], {})[row["steps"]] = row
    complete = {fp: runs for fp, runs in by_fp.items() if set(rungs) <= set(runs)}
    if limit is not None:
        complete = dict(list(complete.items())[:limit])
    if not complete:
        raise ValueError("the replay table has no architecture with a row at every rung yet")
    largest = max(runs[rungs[-1]]["params"] for runs in complete.values())
    table = {}
    for fp, runs in complete.items():
        top = runs[rungs[-1]]
        table[fp] = Arch(fp, top["pattern"], top["params"] / largest,
                         {s: runs[s]["quality"] or 0.0 for s in rungs},
                         max(top["train_seconds"], 1e-6) / rungs[-1])
    return table


def hypervolume(points: list[tuple[float, float]]) -> float:
    """Area dominated by (quality up, normalised params down) points, bounded by REFERENCE."""
    q_ref, p_ref = REFERENCE
    useful = sorted({(q, p) for q, p in points if q > q_ref and p < p_ref}, key=lambda x: x[1])
    area, best_q = 0.0, q_ref
    for index, (q, p) in enumerate(useful):
        best_q = max(best_q, q)
        right = useful[index + 1][1] if index + 1 < len(useful) else p_ref
        area += (right - p) * (best_q - q_ref)
    return area


@dataclass(order=True)
class Job:
    end: float
    order: int
    fingerprint: str = field(compare=False)
    rung: int = field(compare=False)
    cost: float = field(compare=False)
    trial: Any = field(compare=False, default=None)


def params_by_fingerprint(space, table: dict[str, Arch]) -> dict[str, dict]:
    """One parameter assignment of the space for each architecture of the table."""
    import optuna

    found: dict[str, dict] = {}
    for params in space.enumerate():
        fingerprint = space.sample(optuna.trial.FixedTrial(params)).arch.fingerprint()
        if fingerprint in table:
            found.setdefault(fingerprint, params)
    return found


class Proposer:
    """New candidates: random draws from the table, or an Optuna sampler over the space."""

    def __init__(self, kind: str, space, table: dict[str, Arch], seed: int, n_trials: int):
        import optuna

        self.kind, self.space, self.table = kind, space, table
        self.random = random.Random(seed)
        self.study = None
        self.params = params_by_fingerprint(space, table)
        if kind != "random":
            from nas.samplers import make_sampler

            self.study = optuna.create_study(directions=["maximize", "minimize"],
                                             sampler=make_sampler(kind, seed, n_trials))

    def propose(self, taken: set[str]) -> tuple[str, Any] | None:
        import optuna

        if self.study is None:
            left = sorted(set(self.table) - taken)
            return (self.random.choice(left), None) if left else None
        for _ in range(MAX_DRAWS):
            trial = self.study.ask()
            fingerprint = self.space.sample(trial).arch.fingerprint()
            if fingerprint in self.table and fingerprint not in taken:
                return fingerprint, trial
            # outside the table or measured already: a draw that costs nothing
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        # The sampler keeps proposing what it has: the trial goes to a random new one instead
        # (as a search's duplicate guard would, sooner or later), and the sampler learns it.
        left = sorted(set(self.table) - taken)
        if not left:
            return None
        fingerprint = self.random.choice(left)
        self.study.enqueue_trial(self.params[fingerprint])
        trial = self.study.ask()
        self.space.sample(trial)
        return fingerprint, trial

    def tell(self, job: Job, quality: float, params: float, parent_params: Any) -> None:
        import optuna

        if self.study is None:
            return
        if job.trial is not None:
            self.study.tell(job.trial, [quality, params])
        else:  # a promotion: one more complete trial with the candidate's parameters
            self.study.add_trial(optuna.trial.create_trial(
                params=parent_params.params, distributions=parent_params.distributions,
                values=[quality, params]))


def simulate(table: dict[str, Arch], strategy: str, rungs: Rungs, workers: int, seed: int,
             compute_cap: float, space, continue_cost: bool = False,
             decay: float = 0.0) -> list[tuple[float, float]]:
    """(compute spent, hypervolume) after every finished job, until `compute_cap`. With
    `continue_cost` a promotion costs the steps from where its parent's decay began (the last
    `decay` of the rung below, which the wsd schedule trains again) to its own rung."""
    halving = strategy.startswith("sh-")
    proposer = Proposer(strategy.split("-")[1] if halving else strategy.split("-")[0], space,
                        table, seed, n_trials=len(table))
    steps = rungs.steps if halving else (rungs.full_steps,)
    results: list[dict[int, tuple[float, float]]] = [{} for _ in steps]
    promoted: list[set[int]] = [set() for _ in steps]
    ids: dict[str, int] = {}
    trials: dict[str, Any] = {}
    taken: set[str] = set()
    running: list[Job] = []
    top_points: list[tuple[float, float]] = []
    spent, started_cost, order, now = 0.0, 0.0, 0, 0.0
    curve = [(0.0, 0.0)]

    def start() -> bool:
        nonlocal order, started_cost
        decision = next_promotion(rungs, results, promoted) if halving else None
        if decision is not None:
            rung, candidate = decision
            promoted[rung].add(candidate)
            fingerprint = next(fp for fp, i in ids.items() if i == candidate)
            rung += 1
            trial = None
        else:
            proposal = proposer.propose(taken)
            if proposal is None:
                return False
            fingerprint, trial = proposal
            taken.add(fingerprint)
            ids[fingerprint] = len(ids)
            rung = 0
            if trial is not None:
                trials[fingerprint] = trial
        done = 0
        if continue_cost and rung:
            done = steps[rung - 1] - round(decay * steps[rung - 1])
        cost = (steps[rung] - done) * table[fingerprint].seconds_per_step
        order += 1
        heapq.heappush(running, Job(now + cost, order, fingerprint, rung, cost, trial))
        started_cost += cost
        return True

    for _ in range(workers):
        if started_cost >= compute_cap or not start():
            break
    while running:
        job = heapq.heappop(running)
        now, spent = job.end, spent + job.cost
        arch = table[job.fingerprint]
        quality = arch.quality[steps[job.rung]]
        results[job.rung][ids[job.fingerprint]] = (-quality, arch.params)
        proposer.tell(job, quality, arch.params, _frozen(proposer, trials.get(job.fingerprint)))
        if job.rung == len(steps) - 1:
            top_points.append((quality, arch.params))
        curve.append((spent, hypervolume(top_points)))
        if started_cost < compute_cap:
            start()
    return curve


def _frozen(proposer: Proposer, trial: Any):
    """The sampler's record of a candidate's first trial (its parameters and distributions)."""
    if trial is None or proposer.study is None:
        return None
    return proposer.study._storage.get_trial(trial._trial_id)


def at(curve: list[tuple[float, float]], compute: float) -> float:
    """Hypervolume reached by `compute` (a step function of the finished jobs)."""
    value = 0.0
    for spent, hv in curve:
        if spent > compute:
            break
        value = hv
    return value


def summarise(curves: dict[str, list[list[tuple[float, float]]]], cap: float,
              grid: int = 40) -> dict[str, Any]:
    """Mean and standard deviation of the hypervolume on a grid of compute, per strategy."""
    points = [cap * (i + 1) / grid for i in range(grid)]
    table = {}
    for strategy, runs in curves.items():
        values = [[at(curve, c) for curve in runs] for c in points]
        table[strategy] = {"compute": points,
                           "mean": [statistics.fmean(v) for v in values],
                           "std": [statistics.pstdev(v) for v in values]}
    return table


def compute_to_reach(summary: dict, strategy: str, target: float) -> float | None:
    for compute, mean in zip(summary[strategy]["compute"], summary[strategy]["mean"]):
        if mean >= target - 1e-12:
            return compute
    return None


def plot(summary: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.6))
    for strategy, data in summary.items():
        hours = [c / 3600 for c in data["compute"]]
        low = [m - s for m, s in zip(data["mean"], data["std"])]
        high = [m + s for m, s in zip(data["mean"], data["std"])]
        line, = axis.plot(hours, data["mean"], label=strategy,
                          linestyle="-" if strategy.startswith("sh-") else "--")
        axis.fill_between(hours, low, high, alpha=0.12, color=line.get_color())
    axis.set_xlabel("simulated compute (CPU-hours of training)")
    axis.set_ylabel("hypervolume (quality x normalised params)")
    axis.set_title(title, fontsize=10)
    axis.legend(loc="lower right")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def simulate_main(args) -> dict:
    import warnings

    import optuna

    from benchmarks.common import ResultsFile
    from benchmarks.replay import KEY, SPACE
    from search_spaces import load_space

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    rungs = Rungs(tuple(args.rungs), args.eta)
    table = load_table(ResultsFile(args.out, KEY).rows(), rungs.steps, args.architectures)
    space = load_space(str(SPACE))
    full_cost = statistics.fmean(a.seconds_per_step for a in table.values()) * rungs.full_steps
    cap = args.budget_fraction * len(table) * full_cost
    curves: dict[str, list] = {s: [] for s in args.strategies}
    for strategy in args.strategies:
        for seed in range(args.seeds):
            curves[strategy].append(simulate(table, strategy, rungs, args.workers, seed, cap,
                                             space, continue_cost=args.continue_cost,
                                             decay=args.decay))
    summary = summarise(curves, cap)
    best = hypervolume([(a.quality[rungs.full_steps], a.params) for a in table.values()])
    lines = [f"{len(table)} architectures with every rung {','.join(map(str, rungs.steps))}; "
             f"{args.workers} workers, {args.seeds} seeds, eta {rungs.eta}; compute cap "
             f"{cap / 3600:.2f} CPU-h ({args.budget_fraction:g} x the table at full budget); "
             f"promotions {f'continue (decay {args.decay:g})' if args.continue_cost else 'retrain'}"
             f"; reference point "
             f"quality {REFERENCE[0]}, params {REFERENCE[1]} x largest; best possible "
             f"hypervolume (the whole table) {best:.4f}",
             f"{'strategy':<12} " + " ".join(f"{f:>14}" for f in ("HV @ 1/3 cap",
                                                                   "HV @ 2/3 cap", "HV @ cap"))]
    for strategy, data in summary.items():
        n = len(data["mean"])
        cells = [f"{data['mean'][i]:.4f}±{data['std'][i]:.4f}" for i in (n // 3 - 1,
                                                                          2 * n // 3 - 1, n - 1)]
        lines.append(f"{strategy:<12} " + " ".join(f"{c:>14}" for c in cells))
    figures: dict[str, Any] = {"architectures": len(table), "cap_seconds": cap, "best": best,
                               "summary": summary}
    if "nsga2-full" in summary:
        target = summary["nsga2-full"]["mean"][-1]
        for strategy in summary:
            reach = compute_to_reach(summary, strategy, target)
            figures[f"reach_{strategy}"] = reach
            lines.append(f"{strategy:<12} reaches nsga2-full's final mean HV {target:.4f} at "
                         + ("never (within the cap)" if reach is None else
                            f"{reach / cap:.2f} of the cap"))
    print("\n".join(lines))
    if args.plot:
        plot(summary, args.plot, f"replay: {len(table)} architectures, {args.workers} workers, "
             f"{args.seeds} seeds (mean ± sd)")
        print(f"wrote {args.plot}")
    if args.table:
        Path(args.table).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.table}")
    return figures
