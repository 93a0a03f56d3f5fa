"""Starting K worker processes on this machine for one study.

Each worker is `python -m nas worker --study NAME --storage URL`, the same command a user runs
on another machine. With GPUs, worker i sees only GPU i mod n (CUDA_VISIBLE_DEVICES); on CPU the
cores are divided between the workers, because several processes each running as many torch
threads as there are cores slow each other down many times over.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass
class WorkerProcess:
    index: int
    process: subprocess.Popen
    log: Path

    def last_line(self) -> str:
        lines = [line for line in self.log.read_text(errors="replace").splitlines()
                 if line.strip()]
        return lines[-1] if lines else ""


def gpu_count() -> int:
    try:
        import torch  # only to count GPUs: the workers, not this parent, train

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        return 0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def start_workers(study: str, storage_url: str, count: int, *, timeout: float | None = None,
                  outage_wait: float | None = None,
                  artifacts: str | None = None) -> list[WorkerProcess]:
    """Each worker claims its own index in the study (its sampler's seed offset) itself."""
    gpus = gpu_count()
    threads = max(1, cpu_count() // count)
    log_dir = Path(tempfile.mkdtemp(prefix="hnas-workers-"))
    workers = []
    for index in range(count):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)
        command = [sys.executable, "-m", "nas", "worker", "--study", study,
                   "--storage", storage_url, "--quiet", "--threads", str(threads)]
        if timeout is not None:
            command += ["--timeout", str(timeout)]
        if outage_wait is not None:
            command += ["--outage-wait", str(outage_wait)]
        if artifacts is not None:
            command += ["--artifacts", artifacts]
        log = log_dir / f"worker-{index}.log"
        with log.open("w") as handle:
            process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
        workers.append(WorkerProcess(index, process, log))
    return workers
