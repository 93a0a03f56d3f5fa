"""The training process keeps the memory it frees (trials/train/allocator.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from trials.train import allocator

# A training step's pattern: many MiB-sized tensors allocated, touched, and freed together.
# (By default glibc gives the top of the heap back when they are freed, but only when nothing
# else was allocated above them, so the default side's count varies from run to run.)
STEPS = """
import resource, sys, torch
from trials.train.allocator import keep_freed_memory
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

# Whether glibc serves a fresh 16 MiB block with its own mapping (the chunk header's
# IS_MMAPPED bit): by default yes (the threshold starts at 128 KiB), kept no (32 MiB).
MAPPED = """
import ctypes, sys
from trials.train.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
block = libc.malloc(16 * 2**20)
header = ctypes.c_size_t.from_address(block - ctypes.sizeof(ctypes.c_size_t)).value
print(bool(header & 2))
"""

glibc = pytest.mark.skipif(allocator._glibc_mallopt() is None, reason="needs glibc's mallopt")


def run(script: str, *args: str) -> str:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


@glibc
def test_kept_a_large_block_comes_from_the_heap_not_a_mapping_of_its_own():
    assert run(MAPPED, "default") == "True"
    assert run(MAPPED, "keep") == "False"


@glibc
def test_kept_a_step_does_not_fault_its_freed_memory_in_again():
    # 20 MiB a step: 5120 pages each step if the memory went back to the kernel
    assert float(run(STEPS)) < 100


def test_keep_freed_memory_asks_glibc_once(monkeypatch):
    calls = []

    def fake_mallopt(parameter, value):
        calls.append((parameter, value))
        return 1

    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: fake_mallopt)
    allocator.keep_freed_memory.cache_clear()
    try:
        assert allocator.keep_freed_memory() and allocator.keep_freed_memory()
    finally:
        allocator.keep_freed_memory.cache_clear()
    assert calls == [(allocator.M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD_BYTES),
                     (allocator.M_TRIM_THRESHOLD, allocator.TRIM_THRESHOLD_BYTES)]


def test_without_glibc_it_does_nothing(monkeypatch):
    monkeypatch.setattr(allocator, "_glibc_mallopt", lambda: None)
    allocator.keep_freed_memory.cache_clear()
    try:
        assert allocator.keep_freed_memory() is False
    finally:
        allocator.keep_freed_memory.cache_clear()
