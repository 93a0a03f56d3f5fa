"""Processes x threads on this machine: which layout trains the most candidates per hour.

    python benchmarks/thread_layout.py [--preset jamba] [--steps 60] [--seq-suite quick]
        [--layouts 1x1 1x2 2x1] [--busy 0 1] [--json-out FILE]

Each layout PxT starts P processes, each training the preset on the suite for `--steps` steps
per task with T torch threads (`run_trial`, the work of one search trial); `--busy K` adds K
processes that only burn CPU, standing in for a second worker, a test run or an editor's
indexer. The table gives the wall time of the slowest process and the throughput in trials
per hour (P / wall), and, per busy count, each layout's throughput over the 1x1 layout's.

What it is for: a worker picks its torch threads as (cores / workers on the machine); this
shows whether that rule holds, and what oversubscription costs. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

TRIAL = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1]))
from search_spaces.presets import load_arch
from trials.train import Budget, run_trial
result = run_trial(load_arch(sys.argv[2]), sys.argv[3], Budget(steps=int(sys.argv[4])))
assert result.ok, result.failure
"""

BUSY = "while True: pass"


def run_layout(processes: int, threads: int, busy: int, args) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    burners = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    try:
        started = time.perf_counter()
        workers = [subprocess.Popen([sys.executable, "-c", TRIAL, str(threads), args.preset,
                                     args.suite, str(args.steps)], env=env)
                   for _ in range(processes)]
        codes = [w.wait() for w in workers]
        elapsed = time.perf_counter() - started
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    if any(codes):
        raise SystemExit(f"a trial process failed ({codes})")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="jamba")
    parser.add_argument("--suite", default="quick")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--layouts", nargs="+", default=["1x1", "1x2", "2x1"])
    parser.add_argument("--busy", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--json-out")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; {args.preset} on {args.suite}, {args.steps} steps per task")
    print(f"{'busy':>4} {'layout':>6} {'wall s':>8} {'trials/h':>9} {'vs 1x1':>7}")
    rows = []
    for busy in args.busy:
        reference = None
        for layout in args.layouts:
            processes, threads = (int(v) for v in layout.split("x"))
            wall = run_layout(processes, threads, busy, args)
            rate = processes * 3600 / wall
            reference = reference or (rate if layout == "1x1" else None)
            ratio = f"{rate / reference:7.2f}" if reference else f"{'-':>7}"
            print(f"{busy:>4} {layout:>6} {wall:8.1f} {rate:9.1f} {ratio}", flush=True)
            rows.append({"busy": busy, "processes": processes, "threads": threads,
                         "wall_s": wall, "trials_per_hour": rate})
    if args.json_out:
        with open(args.json_out, "a") as out:
            out.write(json.dumps({"preset": args.preset, "steps": args.steps,
                                  "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
