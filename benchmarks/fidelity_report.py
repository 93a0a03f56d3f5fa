"""The figures of benchmarks/fidelity.py, computed from its result rows (no training here).

`summarise(rows, steps, multiple, between)` returns a `Summary`: the per-architecture table,
the seed-to-seed agreement of the 1x score and of the reference, and one `Comparison` (Spearman
and Kendall's tau-b against the reference's seed mean) per cheap score: each 1x seed, their mean,
the same by test loss, budgets read off the reference's learning curves, and `--between` budgets
trained as runs of their own. `Summary.lines()` is the printed report and `Summary.figures()`
the same numbers as a dict (for tests and `--json`-style use).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from benchmarks.common import kendall_tau, spearman

SELF_AGREEMENT_GOAL, FIDELITY_GOAL = 0.85, 0.8

Scores = dict[str, dict[int, float]]  # architecture -> seed -> score


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def runs_of(rows: list[dict], steps: int, schedule: str = "cosine",
            warmup_steps: int | None = None) -> list[dict]:
    """The rows of one budget: `steps` under learning-rate `schedule` with `warmup_steps` (None:
    10% of the steps; rows from before these were recorded are cosine with that warm-up)."""
    return [row for row in rows
            if row["steps"] == steps and row.get("schedule", "cosine") == schedule
            and row.get("warmup_steps") == warmup_steps]


def scores(rows: list[dict], steps: int, schedule: str = "cosine",
           warmup_steps: int | None = None) -> Scores:
    """arch -> seed -> quality at `steps` (a failed run scores 0: a search would rank it last)."""
    table: Scores = {}
    for row in runs_of(rows, steps, schedule, warmup_steps):
        table.setdefault(row["arch"], {})[row["seed"]] = row["quality"] or 0.0
    return table


def loss_scores(rows: list[dict], steps: int) -> Scores:
    """arch -> seed -> minus the mean test loss over the suite's tasks at `steps`. Near chance
    the loss already moves while the accuracy does not, so it may rank a short budget better.
    Rows written before losses were kept, and failed runs, are left out."""
    table: Scores = {}
    for row in runs_of(rows, steps):
        losses = [v for v in (row.get("loss") or {}).values() if v is not None]
        if row["status"] == "ok" and losses:
            table.setdefault(row["arch"], {})[row["seed"]] = -mean(losses)
    return table


def curve_scores(rows: list[dict], steps: int, at: int) -> Scores:
    """arch -> seed -> the `steps` run's test accuracy at step `at` (its learning curve)."""
    table: Scores = {}
    for row in runs_of(rows, steps):
        if row["status"] != "ok":
            continue
        points = [acc for curve in row["curve"].values() for step, acc, _ in curve if step == at]
        if len(points) == len(row["curve"]):
            table.setdefault(row["arch"], {})[row["seed"]] = mean(points)
    return table


def seed_agreement(table: Scores, archs: list[str], seeds: list[int]) -> dict[str, float]:
    """"a-b" -> Spearman between seeds a and b's scores of `archs`, for every pair of seeds."""
    return {f"{a}-{b}": spearman([table[x][a] for x in archs], [table[x][b] for x in archs])
            for a, b in itertools.combinations(seeds, 2)}


def has_seeds(table: Scores, archs: list[str], seeds: list[int]) -> bool:
    return all(set(seeds) <= set(table.get(a, {})) for a in archs)


@dataclass(frozen=True)
class Comparison:
    """One cheap score of every complete architecture against the reference's seed mean."""

    label: str  # its key in `Summary.figures()`, e.g. "1x seed 0", "curve 3x", "3x seed mean"
    text: str  # how its line names it
    spearman: float
    kendall: float
    seconds: float | None = None  # mean cost per candidate, for budgets trained on their own
    judged: bool = True  # whether the line carries the fidelity goal's verdict

    def line(self) -> str:
        verdict = (f" (goal >= {FIDELITY_GOAL}: "
                   f"{'PASS' if self.spearman >= FIDELITY_GOAL else 'MISS'})") if self.judged else ""
        cost = "" if self.seconds is None else f", {self.seconds:.0f} s per candidate"
        return (f"{self.text}: Spearman {self.spearman:.3f}{verdict}, "
                f"Kendall's tau-b {self.kendall:.3f}{cost}")

    def figures(self) -> dict[str, float]:
        values = {"spearman": self.spearman, "kendall": self.kendall}
        return values if self.seconds is None else {**values, "seconds": self.seconds}


@dataclass(frozen=True)
class Summary:
    multiple: int
    seeds: list[int]
    cheap: Scores
    reference: Scores
    complete: list[str]  # architectures with every seed at both budgets
    cheap_complete: int = 0  # architectures with every seed at 1x
    cheap_self: dict[str, float] = field(default_factory=dict)
    reference_self: dict[str, float] = field(default_factory=dict)
    reference_self_loss: dict[str, float] = field(default_factory=dict)
    comparisons: list[Comparison] = field(default_factory=list)
    seconds: dict[int, float] = field(default_factory=dict)  # steps -> mean s per candidate

    def figures(self) -> dict:
        figures: dict = {"architectures": len(self.complete), "seeds": self.seeds}
        if self.cheap_self:
            figures["cheap_self_spearman"] = self.cheap_self
        if self.reference_self:
            figures["reference_self_spearman"] = self.reference_self
        for comparison in self.comparisons:
            figures[comparison.label] = comparison.figures()
        if self.reference_self_loss:
            figures["reference_self_spearman_loss"] = self.reference_self_loss
        return figures

    def lines(self) -> list[str]:
        m, seeds = self.multiple, self.seeds
        lines = [f"{'architecture':<14} " + " ".join(f"1x s{s}" for s in seeds) + "  1x mean  " +
                 " ".join(f"{m}x s{s}" for s in seeds) + f"  {m}x mean"]
        for arch in sorted(self.complete, key=lambda a: -mean(self.reference[a].values())):
            cheap, reference = self.cheap[arch], self.reference[arch]
            lines.append(f"{arch:<14} " + " ".join(f"{cheap[s]:>5.3f}" for s in seeds) +
                         f"  {mean(cheap[s] for s in seeds):>7.3f}  " +
                         " ".join(f"{reference[s]:>5.3f}" for s in seeds) +
                         f"  {mean(reference.values()):>7.3f}")
        if self.cheap_self:
            lines.append(f"1x seed-to-seed Spearman over {self.cheap_complete} architectures: " +
                         _pairs(self.cheap_self))
        if len(self.complete) < 3:
            lines.append(f"{len(self.complete)} architectures have every seed at both budgets; "
                         "the correlations need 3 or more")
            return lines
        if self.reference_self:
            worst = min(self.reference_self.values())
            verdict = "PASS" if worst >= SELF_AGREEMENT_GOAL else "MISS"
            lines.append(f"reference ({m}x) seed-to-seed Spearman: {_pairs(self.reference_self)}"
                         f"; min {worst:.3f} (goal >= {SELF_AGREEMENT_GOAL}: {verdict})")
        lines += [comparison.line() for comparison in self.comparisons]
        if self.reference_self_loss:
            lines.append(f"reference ({m}x) seed-to-seed Spearman by -loss: "
                         f"{_pairs(self.reference_self_loss)}")
        if self.seconds:
            lines.append("mean seconds per candidate: " +
                         ", ".join(f"{s} steps {v:.0f} s" for s, v in self.seconds.items()))
        return lines


def _pairs(agreement: dict[str, float]) -> str:
    return ", ".join(f"s{k} {v:.3f}" for k, v in agreement.items())


def summarise(rows: list[dict], steps: int, multiple: int,
              between: Sequence[tuple[int, str, int | None]] = ()) -> Summary:
    """The figures over the architectures that have every seed at both budgets (1x and the
    reference are cosine runs; `between` holds (multiple of 1x, schedule, warm-up steps))."""
    cheap, reference = scores(rows, steps), scores(rows, steps * multiple)
    seeds = sorted({seed for per in reference.values() for seed in per})
    complete = [a for a in reference if set(reference[a]) == set(seeds) and a in cheap
                and set(seeds) <= set(cheap[a])]
    cheap_seeds = sorted({seed for per in cheap.values() for seed in per})
    cheap_complete = [a for a in cheap if set(cheap[a]) == set(cheap_seeds)]
    # How reproducible the cheap score itself is: the ceiling of any 1x fidelity figure.
    cheap_self = (seed_agreement(cheap, cheap_complete, cheap_seeds)
                  if len(cheap_complete) >= 3 and len(cheap_seeds) >= 2 else {})
    summary = Summary(multiple, seeds, cheap, reference, complete, len(cheap_complete), cheap_self)
    if len(complete) < 3:
        return summary
    ref_mean = [mean(reference[a].values()) for a in complete]

    def compare(label: str, text: str, values: list[float], **extra) -> Comparison:
        return Comparison(label, text, spearman(values, ref_mean), kendall_tau(values, ref_mean),
                          **extra)

    against = f"vs {multiple}x seed mean over {len(complete)} architectures"
    cheap_scores = [(f"1x seed {s}", {a: cheap[a][s] for a in complete}) for s in seeds]
    cheap_scores.append(("1x seed mean", {a: mean(cheap[a][s] for s in seeds) for a in complete}))
    by_loss = loss_scores(rows, steps)
    if has_seeds(by_loss, complete, seeds):
        cheap_scores += [(f"1x -loss s{s}", {a: by_loss[a][s] for a in complete}) for s in seeds]
        cheap_scores.append(("1x -loss mean",
                             {a: mean(by_loss[a][s] for s in seeds) for a in complete}))
    comparisons = [compare(label, f"{label:<13} {against}", [values[a] for a in complete])
                   for label, values in cheap_scores]
    comparisons += _curve_comparisons(rows, steps, multiple, complete, seeds, compare)
    comparisons += _between_comparisons(rows, steps, between, complete, seeds, compare)
    reference_loss = loss_scores(rows, steps * multiple)
    loss_self = (seed_agreement(reference_loss, complete, seeds)
                 if len(seeds) >= 2 and has_seeds(reference_loss, complete, seeds) else {})
    seconds = {s: mean(r["seconds"] for r in runs_of(rows, s))
               for s in (steps, steps * multiple) if runs_of(rows, s)}
    return Summary(multiple, seeds, cheap, reference, complete, len(cheap_complete), cheap_self,
                   seed_agreement(reference, complete, seeds), loss_self, comparisons, seconds)


def _curve_comparisons(rows, steps, multiple, complete, seeds, compare) -> list[Comparison]:
    """Budgets between 1x and the reference, read off the reference runs' learning curves
    (what 2x, 4x ... would buy, without training them). A curve point is not a run of that
    length: the learning rate has not decayed there, so it understates that budget's score."""
    comparisons = []
    for factor in range(2, multiple):
        at = steps * factor
        points = curve_scores(rows, steps * multiple, at)
        if has_seeds(points, complete, seeds):
            comparisons.append(compare(
                f"curve {factor}x", f"{multiple}x curve at {at} steps ({factor}x, seed mean, "
                f"lr not decayed)", [mean(points[a][s] for s in seeds) for a in complete],
                judged=False))
    return comparisons


def _between_comparisons(rows, steps, between, complete, seeds, compare) -> list[Comparison]:
    """Each `--between` budget trained as runs of its own (its schedule decays at its end, as
    a search's would) with its cost per candidate: each seed that has every architecture
    (beside the 1x figure of the same seed, a like-for-like pair while the other seeds still
    run), then the seed mean once every seed is there."""
    comparisons = []
    for factor, schedule, warmup in between:
        table = scores(rows, steps * factor, schedule, warmup)
        name = " ".join([f"{factor}x", *([schedule] if schedule != "cosine" else []),
                         *([f"warm-up {warmup}"] if warmup else [])])
        budget = f"{name} ({steps * factor} steps)"
        done = [s for s in seeds if has_seeds(table, complete, [s])]
        values = [(f"{name} seed {s}", f"{budget} seed {s}", [table[a][s] for a in complete])
                  for s in done]
        if done == seeds:
            values.append((f"{name} seed mean", f"{budget} seed mean",
                           [mean(table[a][s] for s in seeds) for a in complete]))
        if values:
            seconds = mean(r["seconds"] for r in runs_of(rows, steps * factor, schedule, warmup))
            comparisons += [compare(label, f"{text} vs reference", v, seconds=seconds)
                            for label, text, v in values]
    return comparisons


def plot(rows: list[dict], steps: int, multiple: int, path: str) -> None:
    """1x seed mean against the reference's seed mean, one labelled point per architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cheap, reference = scores(rows, steps), scores(rows, steps * multiple)
    archs = [a for a in reference if a in cheap]
    figure, axis = plt.subplots(figsize=(5.6, 5))
    for arch in archs:
        x, y = mean(cheap[arch].values()), mean(reference[arch].values())
        axis.scatter(x, y, color="C0")
        axis.annotate(arch, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axis.set_xlabel(f"quality at {steps} steps (1x, seed mean)")
    axis.set_ylabel(f"quality at {steps * multiple} steps ({multiple}x, seed mean)")
    axis.set_title(f"fidelity on {rows[0]['suite']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
