"""Proxy-training throughput on the CPU: each mixer's training step against its roofline, and
`hnas train` end to end, both against a baseline commit measured in the same run.

    python benchmarks/proxy_throughput.py [--seqs 64 256 1024] [--models A*6 M*6 jamba ...]
        [--baseline REF] [--overhead PRESET ...] [--e2e jamba mamba transformer]
        [--e2e-steps 300] [--no-e2e] [--json-out FILE]

Step table, one torch thread, batch 32, d_model 64 (`--batch-size`, `--d-model`): for each
model and sequence length, the time of one training step (forward, cross-entropy, backward,
AdamW; the median of `--repeats` steps, at least 3, after one warm-up), the step's FLOPs (3 x
the cost model's forward FLOPs per token x tokens), the GEMM rate torch reaches in the same
process on that model's own projection shapes (forward and both backward products of every
nn.Linear; the best of as many passes over them as steps, each pass right after a step), and
their ratio: step time / (FLOPs / GEMM rate), 1.0 being a step that runs entirely at GEMM
speed. "fallback/native" times the same model with the native CPU kernels and with their
PyTorch fallback, alternating step by step in one process: the steadiest measure of what the
kernels buy on a shared machine. "bf16 GEMM x" is the rate of the same products in bf16 over
fp32's: what a bf16 training path (not built: the CPU trains in fp32) could gain in its GEMMs.
With `--baseline REF` (default: the commit before the native
kernels) the same steps are timed on that commit's code against the current tree's, in two
child processes that take turns step by step (the order swapped every round), so that both see
the same machine load: "pair ms" and "base ms" are their medians, "speed-up" their ratio.

Overhead table: the fixed cost of a trial, `run_trial`'s wall seconds for 2 steps per task on
`quick` (data from the cache, model builds, Lightning set-up, the final evaluation, decode
timing), per preset, the median of three trials after one warm-up trial in the same process;
current and baseline.

End-to-end table: the wall time of `hnas train PRESET --suite quick --steps N` (a fresh
process each, one thread per process) on the current tree and on the baseline, alternated. The
current tree runs it twice: as is (its two tasks side by side, one process each, where the
machine has two cores) and with `--processes 1` (one process, the tasks in turn: what one core
gives), with a speed-up over the baseline for each.

Presets (jamba, zamba, griffin) are taken at their shipped widths, which are d_model 64.
Nothing here asserts: ratios are what to read, on a shared machine absolute times drift.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODELS = ("A*6", "L*6", "M*6", "M2*6", "R*6", "H*6", "jamba", "zamba", "griffin")
PRESETS = ("jamba", "zamba", "griffin", "mamba", "mamba2", "transformer", "hawk",
           "stripedhyena")
DEFAULT_BASELINE = "9d8fba7"  # the last commit before trials/ops/native
OVERHEAD_REPEATS = 3  # trials per preset in the fixed-cost table, the median printed


# -- one process's measurements (also run as a child on the baseline tree) ----------------------

def build_arch(name: str, d_model: int):
    from search_spaces import ArchConfig
    from search_spaces.presets import load_arch

    if name in PRESETS:
        return load_arch(name)
    return ArchConfig.from_pattern(name, d_model=d_model, n_heads=4)


def training_step(arch, batch: int, seq: int):
    """A closure running one training step of a fresh model of `arch` on fixed tokens."""
    import torch
    import torch.nn.functional as F

    from trials.builder import build_model

    try:  # the allocator settings run_trial takes on the CPU
        from trials.train.allocator import keep_freed_memory
    except ImportError:  # a baseline before them
        pass
    else:
        keep_freed_memory()
    model = build_model(arch, seed=0)
    try:  # the optimiser run_trial builds
        from trials.train.module import adamw
    except ImportError:  # a baseline before `adamw`: its trials built torch's default AdamW
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    else:
        optimizer = adamw(model, lr=1e-3, weight_decay=0.1)
    tokens = torch.randint(0, arch.vocab_size, (batch, seq), generator=torch.Generator()
                           .manual_seed(0))

    def step() -> None:
        logits = model(tokens).logits
        loss = F.cross_entropy(logits.flatten(0, 1).float(), tokens.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def alternated_medians(runs: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds of each run, the runs taking turns in this process (after one warm-up
    call each: allocations, the kernels' first load; the order reversed every other round), so
    that a change in the machine's speed falls on all of them alike: sequential timings on this
    VM drifted 2x."""
    for run in runs.values():
        run()
    names = list(runs)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in (names if index % 2 == 0 else names[::-1]):
            times[name].append(timed(runs[name]))
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def fallback_over_native(arch, batch: int, seq: int, repeats: int) -> float | None:
    """Median step time with the PyTorch fallback over that with the native kernels, the two
    alternating step by step in this process."""
    try:
        from trials.ops import native
    except ImportError:
        return None
    step = training_step(arch, batch, seq)

    def fallback_step() -> None:
        with native.disabled():
            step()

    medians = alternated_medians({"native": step, "fallback": fallback_step}, repeats)
    return medians["fallback"] / medians["native"]


def alternating_ratios(models: list[str], seq: int, batch: int, d_model: int,
                       rounds: int) -> dict[str, float]:
    """Median step time of each model over the first's, the models stepping in turn."""
    medians = alternated_medians(
        {name: training_step(build_arch(name, d_model), batch, seq) for name in models}, rounds)
    return {name: medians[name] / medians[models[0]] for name in models}


def projection_shapes(arch) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of every nn.Linear of a model of `arch`, and of the LM head."""
    import torch

    from trials.builder import build_model

    model = build_model(arch, seed=0)
    shapes = sorted({(m.in_features, m.out_features) for m in model.modules()
                     if isinstance(m, torch.nn.Linear)})
    return shapes + [(arch.d_model, arch.vocab_size)]


def gemm_probe(shapes: list[tuple[int, int]], rows: int, dtype) -> tuple[Callable[[], None],
                                                                          float]:
    """A closure running torch.mm in `dtype` over the forward and both backward products of
    each (fan_in, fan_out) projection at `rows` rows, and the FLOPs of one call."""
    import torch

    products, flops = [], 0.0
    for fan_in, fan_out in shapes:
        x, w = torch.randn(rows, fan_in, dtype=dtype), torch.randn(fan_in, fan_out, dtype=dtype)
        dy = torch.randn(rows, fan_out, dtype=dtype)
        products += [(x, w), (dy, w.t()), (x.t(), dy)]  # y, dx, dw
        flops += 3 * 2.0 * rows * fan_in * fan_out

    def probe() -> None:
        for a, b in products:
            torch.mm(a, b)

    return probe, flops


def gemm_rate(shapes: list[tuple[int, int]], rows: int, dtype) -> float:
    """The best FLOP/s of three `gemm_probe` calls after a warm-up."""
    probe, flops = gemm_probe(shapes, rows, dtype)
    probe()
    return flops / min(timed(probe) for _ in range(3))


def step_and_gemm_rate(arch, shapes: list[tuple[int, int]], batch: int, seq: int,
                       repeats: int) -> tuple[float, float]:
    """The median seconds of `repeats` training steps, and the best fp32 FLOP/s of the model's
    projections, the two timed in turn (a step, then all the products once), so that both
    see the machine as it is: timed apart, the GEMM rate of a row swung 75-160 GFLOP/s on the
    shared VM and the roofline ratio with it."""
    import torch

    step = training_step(arch, batch, seq)
    probe, flops = gemm_probe(shapes, batch * seq, torch.float32)
    step()  # warm-up: allocations, the kernels' first load
    probe()
    steps, probes = [], []
    for _ in range(max(3, repeats)):
        steps.append(timed(step))
        probes.append(timed(probe))
    return statistics.median(steps), flops / min(probes)


def measure(models: list[str], seqs: list[int], batch: int, d_model: int,
            repeats: int) -> list[dict]:
    import torch

    from search_spaces.cost import estimate

    torch.set_num_threads(1)
    rows = []
    for name in models:
        arch = build_arch(name, d_model)
        shapes = projection_shapes(arch)
        for seq in seqs:
            step_s, gemm_flops_per_s = step_and_gemm_rate(arch, shapes, batch, seq, repeats)
            row = {"model": name, "seq": seq, "step_s": step_s,
                   "step_flops": 3 * estimate(arch, context=seq).flops_per_token * batch * seq,
                   "gemm_flops_per_s": gemm_flops_per_s,
                   # what the same products reach in bf16 (oneDNN's AMX or AVX-512 BF16 where
                   # the CPU has them): the headroom a bf16 path would have, not used here
                   "bf16_gemm_flops_per_s": gemm_rate(shapes, batch * seq, torch.bfloat16),
                   "fallback_over_native": fallback_over_native(arch, batch, seq, repeats)}
            rows.append(row)
    return rows


def trial_overhead(presets: list[str]) -> dict[str, float]:
    import torch

    from search_spaces.presets import load_arch
    from trials.train import Budget, run_trial

    torch.set_num_threads(1)
    budget = Budget(steps=2)
    run_trial(load_arch(presets[0]), "quick", budget)  # warm-up: task cache, kernels, imports
    return {name: statistics.median(run_trial(load_arch(name), "quick", budget).wall_seconds
                                    for _ in range(OVERHEAD_REPEATS))
            for name in presets}


def kernels_note() -> str:
    try:
        from trials.ops import native
    except ImportError:
        return "pure PyTorch (no trials.ops.native)"
    return f"native kernels: {native.kernel_for(__import__('torch').zeros(1))}"


# -- the parent: current tree in-process, baseline in children ----------------------------------

def export_tree(ref: str, into: Path) -> Path:
    """The files of commit `ref`, exported with `git archive` (no checkout is touched)."""
    archive = into / f"{ref}.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), ref], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into / ref, filter="data")
    return into / ref


def serve_steps(model: str, seq: int, batch: int, d_model: int) -> None:
    """A child's loop: one training step of `model` per line read from stdin, its seconds
    printed back (after one warm-up step and a "ready")."""
    import torch

    torch.set_num_threads(1)
    step = training_step(build_arch(model, d_model), batch, seq)
    step()
    print("ready", flush=True)
    for _ in sys.stdin:
        print(timed(step), flush=True)


def paired_steps(trees: dict[str, Path], model: str, seq: int, args) -> dict[str, float]:
    """Median step seconds of `model` at `seq` on each tree: one child per tree, the children
    taking turns step by step (the order swapped each round), so that whatever else loads the
    machine falls on every tree alike."""
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-steps", model, str(seq),
               "--batch-size", str(args.batch_size), "--d-model", str(args.d_model)]
    children = {name: subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       text=True, env=child_env(tree))
                for name, tree in trees.items()}
    times: dict[str, list[float]] = {name: [] for name in trees}
    try:
        for name, child in children.items():
            if child.stdout.readline().strip() != "ready":
                raise SystemExit(f"the step server on {trees[name]} failed for {model} at {seq}")
        order = list(children)
        for round_ in range(args.repeats):
            for name in order if round_ % 2 == 0 else order[::-1]:
                children[name].stdin.write("step\n")
                children[name].stdin.flush()
                times[name].append(float(children[name].stdout.readline()))
    finally:
        for child in children.values():
            child.stdin.close()
            child.wait()
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def child_overhead(tree: Path, presets: list[str]) -> dict[str, float]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child-overhead",
               "--overhead", *presets]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env=child_env(tree))
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_env(tree: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}


def takes_processes(tree: Path) -> bool:
    """Whether the tree's `hnas train` has `--processes` (before it, tasks ran in turn)."""
    return "--processes" in (tree / "nas" / "cli" / "train.py").read_text()


def train_wall_seconds(tree: Path, preset: str, steps: int, *options: str) -> float:
    command = [sys.executable, "-m", "nas", "train", preset, "--suite", "quick",
               "--steps", str(steps), "--json", *options]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(tree),
                          cwd=tree)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"hnas train {preset} failed in {tree}:\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    parser.add_argument("--seqs", nargs="+", type=int, default=[64, 256, 1024])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE,
                        help="a commit to compare against ('' to skip)")
    parser.add_argument("--current", default="",
                        help="a commit to run as the current code in the end-to-end table "
                             "(default: this working tree)")
    parser.add_argument("--e2e", nargs="*", default=["jamba", "mamba", "transformer"])
    parser.add_argument("--e2e-steps", type=int, default=300)
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument("--alternate", nargs="+", metavar="MODEL",
                        help="also time these models in turn in one process (--repeats rounds, "
                             "at least 11) and print each step over the first's, per --seqs")
    parser.add_argument("--json-out")
    parser.add_argument("--overhead", nargs="*", default=list(PRESETS))
    parser.add_argument("--serve-steps", nargs=2, metavar=("MODEL", "SEQ"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--child-overhead", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_steps:
        serve_steps(args.serve_steps[0], int(args.serve_steps[1]), args.batch_size,
                    args.d_model)
        return
    if args.child_overhead:
        print(json.dumps(trial_overhead(args.overhead)))
        return

    print(f"batch {args.batch_size}, d_model {args.d_model}, 1 thread; current tree: "
          f"{kernels_note()}; baseline: {args.baseline or 'none'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="hnas-throughput-") as tmp:
        tree = export_tree(args.baseline, Path(tmp)) if args.baseline else None
        current_tree = export_tree(args.current, Path(tmp)) if args.current else ROOT
        rows = []
        header = (f"{'model':10} {'seq':>5} {'step ms':>9} {'GFLOP':>7} {'GEMM GF/s':>9} "
                  f"{'x roofline':>10} {'fallback/native':>15} {'bf16 GEMM x':>11}"
                  + (f" {'pair ms':>9} {'base ms':>9} {'speed-up':>8}" if tree else ""))
        print(header)
        for model in args.models:
            for row in measure([model], args.seqs, args.batch_size, args.d_model,
                               args.repeats):
                roofline_s = row["step_flops"] / row["gemm_flops_per_s"]
                row["x_roofline"] = row["step_s"] / roofline_s
                line = (f"{row['model']:10} {row['seq']:>5} {row['step_s'] * 1e3:9.1f} "
                        f"{row['step_flops'] / 1e9:7.2f} {row['gemm_flops_per_s'] / 1e9:9.1f} "
                        f"{row['x_roofline']:10.2f} {row['fallback_over_native'] or 0:15.2f} "
                        f"{row['bf16_gemm_flops_per_s'] / row['gemm_flops_per_s']:11.2f}")
                if tree:
                    paired = paired_steps({"current": current_tree, "baseline": tree},
                                          model, row["seq"], args)
                    row["paired_step_s"] = paired["current"]
                    row["baseline_step_s"] = paired["baseline"]
                    row["speedup"] = paired["baseline"] / paired["current"]
                    line += (f" {paired['current'] * 1e3:9.1f} {paired['baseline'] * 1e3:9.1f}"
                             f" {row['speedup']:8.2f}")
                print(line, flush=True)
                rows.append(row)
        summarize_vs_attention(rows)
        alternating = []
        if args.alternate:
            print(f"\nstep time / {args.alternate[0]}'s, the models stepping in turn in one "
                  "process")
            for seq in args.seqs:
                ratios = alternating_ratios(args.alternate, seq, args.batch_size, args.d_model,
                                            max(args.repeats, 11))
                for name, ratio in ratios.items():
                    print(f"{name:10} {seq:>5} {ratio:6.2f}", flush=True)
                alternating.append({"seq": seq, "over_first": ratios})
        overhead = {}
        if args.overhead:
            print("\nfixed cost of a trial: run_trial wall seconds, 2 steps per task on quick")
            print(f"{'preset':12} {'current':>8}" + (f" {'baseline':>8}" if tree else ""))
            current = trial_overhead(args.overhead)
            base = child_overhead(tree, args.overhead) if tree else {}
            for name in args.overhead:
                overhead[name] = {"current_s": current[name], "baseline_s": base.get(name)}
                print(f"{name:12} {current[name]:8.2f}" +
                      (f" {base[name]:8.2f}" if name in base else ""), flush=True)
        e2e = []
        if not args.no_e2e and args.e2e:
            print(f"\nhnas train PRESET --suite quick --steps {args.e2e_steps} (wall seconds)")
            print(f"{'preset':12} {'current':>9} {'1 process':>9}" +
                  (f" {'baseline':>9} {'speed-up':>8} {'1 process':>9}" if tree else ""))
            for preset in args.e2e:
                current = train_wall_seconds(current_tree, preset, args.e2e_steps)
                one = train_wall_seconds(current_tree, preset, args.e2e_steps,
                                         "--processes", "1") \
                    if takes_processes(current_tree) else current  # older: one process anyway
                entry = {"preset": preset, "steps": args.e2e_steps, "current_s": current,
                         "one_process_s": one}
                line = f"{preset:12} {current:9.1f} {one:9.1f}"
                if tree:
                    entry["baseline_s"] = train_wall_seconds(tree, preset, args.e2e_steps)
                    entry["speedup"] = entry["baseline_s"] / current
                    entry["one_process_speedup"] = entry["baseline_s"] / one
                    line += (f" {entry['baseline_s']:9.1f} {entry['speedup']:8.2f}"
                             f" {entry['one_process_speedup']:9.2f}")
                print(line, flush=True)
                e2e.append(entry)
    if args.json_out:
        with open(args.json_out, "a") as out:
            out.write(json.dumps({"baseline": args.baseline, "batch": args.batch_size,
                                  "d_model": args.d_model, "steps": rows,
                                  "alternating": alternating, "overhead": overhead,
                                  "e2e": e2e}) + "\n")


def summarize_vs_attention(rows: list[dict]) -> None:
    """Each model's step time over A*6's at the same length (the issue's Mamba target)."""
    attention = {r["seq"]: r["step_s"] for r in rows if r["model"] == "A*6"}
    if not attention:
        return
    print("\nstep time / A*6's at the same length")
    for row in rows:
        if row["model"] != "A*6" and row["seq"] in attention:
            print(f"{row['model']:10} {row['seq']:>5} {row['step_s'] / attention[row['seq']]:6.2f}")


if __name__ == "__main__":
    main()
