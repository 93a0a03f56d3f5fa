"""How many torch threads a process that trains candidates on the CPU uses: one.

The proxy models are small (d_model 32-256, a few thousand rows per GEMM): their ops are too
short to share between threads profitably, and every parallel region waits for its slowest
thread, so a thread that the OS deschedules stalls the whole step. Measured with
`benchmarks/thread_layout.py` on the 2-core machine (jamba on `quick`, another engineer's tests
running beside it): one process with 2 threads trained 0.18x the trials per hour of one process
with 1 thread, and two 1-thread processes 1.11x. So a worker trains on one thread and a machine
is filled with processes (`hnas search --workers N`, one per core), which also slow down only
in proportion when something else needs a core. For the same reason `hnas train`, which trains
one candidate, spreads its suite's tasks over processes rather than threads
(`trials.train.task_processes`).

`HNAS_THREADS` (a positive integer) overrides the rule for the processes that read it, as does
`--threads` on `hnas worker`. A library caller of `run_trial` that left torch at its default
(one thread per core) gets one warning: beside two busy processes, a jamba step at torch's
default 2 threads took 10 s where one thread took 0.4 s.
"""

from __future__ import annotations

import os
import warnings

import torch

ENV_THREADS = "HNAS_THREADS"


def training_threads() -> int:
    """Threads for one training process: `HNAS_THREADS` if set to a positive integer, else 1."""
    value = os.environ.get(ENV_THREADS, "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    return 1


def use_training_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to `threads` (default: `training_threads()`); returns it."""
    chosen = max(1, threads) if threads is not None else training_threads()
    torch.set_num_threads(chosen)
    return chosen


_warned = False


def warn_if_many_threads() -> None:
    """Warn once per process when CPU training would run on more torch threads than the rule
    chooses and nobody chose that (`HNAS_THREADS` unset)."""
    global _warned
    threads = torch.get_num_threads()
    if _warned or threads <= training_threads() or os.environ.get(ENV_THREADS, "").strip():
        return
    _warned = True
    warnings.warn(f"torch trains on {threads} threads; proxy models train fastest on one per "
                  f"process, and many times slower when the cores are shared: call "
                  f"trials.train.use_training_threads() first, or set {ENV_THREADS}={threads} "
                  f"to keep {threads}", RuntimeWarning, stacklevel=3)
