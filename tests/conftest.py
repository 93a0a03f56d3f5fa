"""Shared test set-up: generated task data goes to a per-run temporary cache, never to the
user's ~/.cache."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _task_cache(tmp_path_factory):
    from trials.tasks.cache import CACHE_ENV

    patch = pytest.MonkeyPatch()
    patch.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("task-cache")))
    yield
    patch.undo()
