"""One candidate's tasks trained side by side, one process per task, on a CPU with idle cores.

A suite's tasks are independent (a fresh model per task, each seeded by the trial), so a trial
that has the machine to itself (`hnas train`) need not train them one after another on one core
while the others idle. Each task then runs in a forked child on one torch thread, the layout
`trials.train.threads` measured for workers, and sends back its `TaskResult` (with its
checkpoints), the kernels it ran, its peak memory and, for the task that decodes, the decode
latency. The results are those of the same tasks trained in turn: every task's randomness comes
from the trial's seed, not from what ran before it in the process.

Only `fork` is used: a child starts in milliseconds with everything imported (a spawned one
spends seconds importing Lightning), and it is safe here because the parent trains on one
thread, so no OpenMP team exists to be lost in the fork. Where `fork` is missing (Windows) or
unsafe (macOS), or the parent runs more than one torch thread, the tasks run in turn.

A search never uses this: its workers are already one process per core.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import torch

from trials.ops import dispatch
from trials.train.result import TaskResult


class TaskProcessDied(RuntimeError):
    """A task's child process ended without sending a result: killed by a signal, on Linux
    most often by the kernel's out-of-memory killer."""

    def __init__(self) -> None:
        # not "out of memory": `describe_failure` would file it as "oom", which is not known
        super().__init__("a task's training process was killed by a signal before it finished "
                         "(the kernel's OOM killer, if memory ran out)")


@dataclass
class TaskOutcome:
    """What one task's child process sends back."""

    result: TaskResult  # with its checkpoints
    kernels: dict[str, set[str]]  # op -> implementations run (dispatch.Ran.by_op)
    peak_memory_bytes: int
    decode_ms_per_token: float | None  # only the task whose model is timed


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def can_fork_tasks() -> bool:
    return sys.platform.startswith("linux") and torch.get_num_threads() == 1 \
        and "fork" in multiprocessing.get_all_start_methods()


def task_processes(n_tasks: int, requested: int | None) -> int:
    """How many processes train a trial's `n_tasks` tasks: `requested` (None: one per usable
    core), at most one per task, and 1 where forking is not safe (see the module doc)."""
    if n_tasks <= 1 or not can_fork_tasks():
        return 1
    wanted = usable_cores() if requested is None else requested
    return max(1, min(wanted, n_tasks))


def run_in_children(jobs: list, processes: int) -> Iterator[tuple[int, TaskOutcome]]:
    """Run each job (a picklable callable without arguments that returns a TaskOutcome) in a
    forked child, `processes` at a time, and yield (its index, its outcome) as each finishes.
    The first job to raise cancels the jobs not yet started; its exception is raised once the
    running ones have finished (and been yielded). A child that dies without a result (the
    pool then breaks) raises TaskProcessDied."""
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        futures = {pool.submit(job): index for index, job in enumerate(jobs)}
        failure: BaseException | None = None
        for future in as_completed(futures):
            if future.cancelled():
                continue
            if future.exception() is not None:
                if failure is None:
                    failure = future.exception()
                    for other in futures:
                        other.cancel()
                continue
            yield futures[future], future.result()
        if isinstance(failure, BrokenProcessPool):
            raise TaskProcessDied() from failure
        if failure is not None:
            raise failure


def note_kernels(kernels: dict[str, set[str]]) -> None:
    """Note a child's kernels in this process's open `recording()` blocks."""
    for op, names in kernels.items():
        for name in names:
            dispatch.note_ran(op, name)
