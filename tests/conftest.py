"""Shared test set-up: generated task data goes to a per-run temporary cache and the compiled
CPU kernels to one shared by every run of this user (`tempfile.gettempdir()`), never to the
user's ~/.cache; torch runs on one thread.

The kernel cache outlives the run because a build takes about 12 s and its file name already
holds the hash of the source, flags, compiler and CPU: a later run (or the second xdist
worker, which waits on the first one's build lock) loads it, and a changed source builds anew.

One thread because the chunked scans issue many mid-sized ops: on a 2-core machine with any
other load, two torch threads were measured 10-60x slower than one (see benchmarks/ops_scan.py),
which made the suite's duration depend on whatever else the machine was doing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _task_cache(tmp_path_factory):
    from trials.tasks.cache import CACHE_ENV

    from trials.ops.native import ENV_CACHE

    patch = pytest.MonkeyPatch()
    patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("task-cache")))
    patch.setenv(ENV_CACHE, str(Path(tempfile.gettempdir()) / f"hnas-test-kernels-{os.getuid()}"))
    yield
    patch.undo()
