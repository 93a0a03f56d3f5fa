"""Shared test set-up: generated task data and the compiled CPU kernels go to per-run
temporary caches, never to the user's ~/.cache; torch runs on one thread.

One thread because the chunked scans issue many mid-sized ops: on a 2-core machine with any
other load, two torch threads were measured 10-60x slower than one (see benchmarks/ops_scan.py),
which made the suite's duration depend on whatever else the machine was doing.
"""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _task_cache(tmp_path_factory):
    from trials.tasks.cache import CACHE_ENV

    from trials.ops.native import ENV_CACHE

    patch = pytest.MonkeyPatch()
    patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("task-cache")))
    patch.setenv(ENV_CACHE, str(tmp_path_factory.mktemp("kernel-cache")))
    yield
    patch.undo()
