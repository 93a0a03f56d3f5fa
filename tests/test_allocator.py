"""The training process keeps the memory it frees (trials/train/allocator.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trials.train import allocator

# A training step's pattern: many MiB-sized tensors allocated, touched, and freed together.
STEPS = """
import resource, sys, torch
from trials.train.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step():
    blocks = [torch.ones(256 * 1024) for _ in range(20)]  # 20 x 1 MiB
    del blocks
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""

glibc = pytest.mark.skipif(allocator._glibc_mallopt() is None, reason="needs glibc's mallopt")


def page_faults_per_step(mode: str) -> float:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip())


@glibc
def test_a_step_faults_its_memory_in_again_by_default_and_not_once_kept():
    # by default glibc trims the 20 MiB freed at the top of the heap: 5120 pages come back
    assert page_faults_per_step("default") > 2000
    assert page_faults_per_step("keep") < 100


def test_keep_freed_memory_asks_glibc_once(monkeypatch):
    calls = []

    def fake_mallopt(parameter, value):
        calls.append((parameter, value))
        return 1

    monkeypatch.setattr(allocator, "_kept", None)
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: fake_mallopt)
    assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    assert calls == [(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD_BYTES),
                     (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD_BYTES)]


def test_without_glibc_it_does_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_kept", None)
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: None)
    assert allocator.keep_freed_memory() is False
