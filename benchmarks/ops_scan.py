"""Step time (forward + backward) of the scan ops: fast path vs naive reference, on CPU.

    python benchmarks/ops_scan.py [--lengths 256 1024 4096] [--repeats N] [--threads N]
                                  [--json-out FILE]

selective_scan: batch 8, channels 256, d_state 16, with D and the z gate (as Mamba calls it).
linear_scan:    batch 8, channels 256 (as RG-LRU calls it).

Fast times are the minimum over the repeats after one warm-up step. The naive reference loops
over time in Python; its time is one step (after a warm-up at the shortest length). Where the
`mambapy` package imports, selective_scan is also timed the way Hugging Face's Mamba runs with
`use_mambapy=True`: every decay and input materialised as (B, L, D, N) and scanned by
`mambapy.pscan`, then contracted with C (one step after a warm-up). Nothing here asserts; the
tests check correctness. About a minute on 2 cores, most of it in the L = 4096 reference rows.

On a machine where other processes are busy, several torch threads can run an order of
magnitude slower than one (every op is a parallel region that waits for a descheduled thread;
the chunked fast path runs many more such regions than the naive loop, whose per-step ops are
too small to be parallelised), so compare at `--threads 1` there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from trials.ops import (
    linear_scan,
    naive_linear_scan,
    naive_selective_scan,
    selective_scan,
)

BATCH, CHANNELS, D_STATE = 8, 256, 16
LENGTHS = (256, 1024, 4096)


def step_time(fn: Callable[[], torch.Tensor], repeats: int, warmup: bool = True) -> float:
    """Seconds for fn().sum().backward(): the minimum over `repeats` after one warm-up."""
    if warmup:
        fn().sum().backward()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn().sum().backward()
        best = min(best, time.perf_counter() - start)
    return best


def selective_scan_case(length: int):
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g) * scale + shift).requires_grad_()

    x, z = rand(BATCH, length, CHANNELS), rand(BATCH, length, CHANNELS)
    dt = F.softplus(torch.randn(BATCH, length, CHANNELS, generator=g) - 4).requires_grad_()
    A = (-torch.arange(1, D_STATE + 1.0).repeat(CHANNELS, 1)).requires_grad_()  # S4D-real
    B, C = rand(BATCH, length, D_STATE), rand(BATCH, length, D_STATE)
    D = rand(CHANNELS)
    args = (x, dt, A, B, C, D, z)
    return {
        "fast": lambda: selective_scan(*args),
        "naive": lambda: naive_selective_scan(*args),
        "mambapy": _mambapy_step(*args),
    }


def _mambapy_step(x, dt, A, B, C, D, z):
    """Hugging Face's `use_mambapy=True` scan path, or None when mambapy is not installed."""
    try:
        from mambapy.pscan import pscan
    except ImportError:
        return None

    def run():
        decay = torch.exp(dt[..., None] * A)  # (B, L, D, N)
        inputs = (dt * x)[..., None] * B[:, :, None, :]  # (B, L, D, N)
        states = pscan(decay, inputs)
        y = (states @ C[..., None]).squeeze(-1) + D * x
        return y * F.silu(z)

    return run


def linear_scan_case(length: int):
    g = torch.Generator().manual_seed(0)
    a = torch.rand(BATCH, length, CHANNELS, generator=g).mul(0.1).add(0.899).requires_grad_()
    b = torch.randn(BATCH, length, CHANNELS, generator=g).requires_grad_()
    return {"fast": lambda: linear_scan(a, b), "naive": lambda: naive_linear_scan(a, b),
            "mambapy": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--json-out", default=None, metavar="FILE")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cores, load average {load:.1f}")
    if load > (os.cpu_count() or 1) * 0.75 and torch.get_num_threads() > 1:
        print("warning: the machine is busy; several threads may then run far slower than one "
              "(try --threads 1)")

    rows = []
    header = (f"{'op':<15}{'L':>6}{'fast ms':>10}{'naive ms':>11}{'naive/fast':>12}"
              f"{'mambapy ms':>12}{'mambapy/fast':>14}")
    print(header)
    print("-" * len(header))
    for op, make in (("selective_scan", selective_scan_case), ("linear_scan", linear_scan_case)):
        for i, length in enumerate(sorted(args.lengths)):
            case = make(length)
            fast = step_time(case["fast"], args.repeats)
            naive = step_time(case["naive"], 1, warmup=(i == 0))
            other = case["mambapy"] and step_time(case["mambapy"], 1)
            row = {"op": op, "length": length, "batch": BATCH, "channels": CHANNELS,
                   "d_state": D_STATE if op == "selective_scan" else None,
                   "fast_ms": fast * 1e3, "naive_ms": naive * 1e3, "naive_over_fast": naive / fast,
                   "mambapy_ms": other * 1e3 if other else None,
                   "mambapy_over_fast": other / fast if other else None}
            rows.append(row)
            mp_ms = f"{row['mambapy_ms']:12.1f}" if other else f"{'n/a':>12}"
            mp_ratio = f"{row['mambapy_over_fast']:13.1f}x" if other else f"{'n/a':>14}"
            print(f"{op:<15}{length:>6}{fast * 1e3:10.1f}{naive * 1e3:11.1f}"
                  f"{naive / fast:11.1f}x{mp_ms}{mp_ratio}", flush=True)

    path = args.json_out or os.path.join(tempfile.gettempdir(), "hnas-bench-ops-scan.json")
    meta = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "load_average": load}
    with open(path, "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    print(f"rows written to {path}")


if __name__ == "__main__":
    main()
