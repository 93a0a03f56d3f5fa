"""The compiled CPU kernels: built once per machine and cached, chosen by one visible rule,
recorded with each trial, and never a reason for a trial to fail (a missing or broken compiler
falls back to PyTorch with one warning). Their numerics are held to the references in
test_ops.py, which runs every op test with and without them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from search_spaces import ArchConfig
from trials.ops import dispatch, native, selective_scan
from trials.tasks import MQAR, Suite, SuiteEntry
from trials.train import Budget, run_trial

ROOT = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter: the library is loaded once per process.
PROBE = """
import json, warnings, torch
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    from trials.ops import native, selective_scan, naive_selective_scan, causal_conv1d
    torch.manual_seed(0)
    x, dt = torch.randn(2, 9, 4), torch.rand(2, 9, 4) * 0.5
    A, B, C = -torch.rand(4, 3), torch.randn(2, 9, 3), torch.randn(2, 9, 3)
    error = (selective_scan(x, dt, A, B, C) - naive_selective_scan(x, dt, A, B, C)).abs().max()
    causal_conv1d(x, torch.randn(4, 3), silu=True)
    selective_scan(x, dt, A, B, C)
print(json.dumps({"kernel": native.kernel_for(x), "error": float(error),
                  "warnings": [str(w.message) for w in caught
                               if issubclass(w.category, RuntimeWarning)]}))
"""


def probe(tmp_path: Path, **env: str) -> dict:
    environment = {**os.environ, "HNAS_KERNEL_CACHE": str(tmp_path / "cache"),
                   "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=environment, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_processes_starting_together_build_once_and_later_ones_reuse_it(tmp_path):
    # a compiler wrapper that notes each build: two processes start together on an empty
    # cache, then a third comes later; one build in all
    log = tmp_path / "builds.log"
    wrapper = tmp_path / "cxx"
    wrapper.write_text(f'#!/bin/sh\ncase "$*" in *-shared*) echo build >> "{log}";; esac\n'
                       f'exec "{native._compiler()}" "$@"\n')
    wrapper.chmod(0o755)
    environment = {**os.environ, "HNAS_KERNEL_CACHE": str(tmp_path / "cache"),
                   "PYTHONPATH": str(ROOT), "CXX": str(wrapper)}
    together = [subprocess.Popen([sys.executable, "-c", PROBE], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=environment)
                for _ in range(2)]
    for run in together:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
        first = json.loads(out.strip().splitlines()[-1])
        assert first["kernel"] == native.NATIVE and first["warnings"] == []
        assert first["error"] < 1e-5
    assert log.read_text().splitlines() == ["build"]
    built = list((tmp_path / "cache").glob("libhnas_scan-*.so"))
    assert len(built) == 1
    stamp = built[0].stat().st_mtime_ns
    later = probe(tmp_path, CXX=str(wrapper))
    assert later["kernel"] == native.NATIVE
    assert [p.stat().st_mtime_ns for p in (tmp_path / "cache").glob("*.so")] == [stamp]
    assert log.read_text().splitlines() == ["build"]


def test_a_broken_compiler_falls_back_with_one_warning(tmp_path):
    result = probe(tmp_path, CXX="false")  # exits 1 on every build
    assert result["kernel"] == native.PYTORCH
    assert result["error"] < 1e-5  # the fallback gives the reference's results
    assert len(result["warnings"]) == 1
    assert "native CPU kernels unavailable" in result["warnings"][0]
    assert not list((tmp_path / "cache").glob("*.so"))  # nothing half-built left behind


def test_choosing_pytorch_explicitly_is_silent(tmp_path):
    result = probe(tmp_path, HNAS_KERNELS="pytorch")
    assert result["kernel"] == native.PYTORCH and result["warnings"] == []


def test_the_rule_native_on_cpu_float_only():
    assert native.kernel_for(torch.zeros(1, dtype=torch.float32)) == native.NATIVE
    assert native.kernel_for(torch.zeros(1, dtype=torch.float64)) == native.NATIVE
    assert native.kernel_for(torch.zeros(1, dtype=torch.bfloat16)) == native.PYTORCH
    with native.disabled():
        assert native.kernel_for(torch.zeros(1)) == native.PYTORCH
        assert dispatch.planned_kernels("cpu")["selective_scan"] == native.PYTORCH
    assert dispatch.planned_kernels("cuda")["selective_scan"] != native.NATIVE
    assert dispatch.planned_kernels("cpu")["selective_scan"] == native.NATIVE


def test_forced_fallback_matches_the_native_path():
    torch.manual_seed(3)
    x, dt, z = torch.randn(3, 40, 6), torch.rand(3, 40, 6), torch.randn(3, 40, 6)
    A, B, C, D = -torch.rand(6, 4) * 2, torch.randn(3, 40, 4), torch.randn(3, 40, 4), \
        torch.randn(6)
    fast = selective_scan(x, dt, A, B, C, D=D, z=z)
    with native.disabled():
        fallback = selective_scan(x, dt, A, B, C, D=D, z=z)
    assert torch.allclose(fast, fallback, atol=1e-5, rtol=1e-5)


def test_a_trial_records_which_kernels_ran():
    arch = ArchConfig.from_pattern("M R", d_model=16, n_heads=2, d_state=4)
    suite = Suite(name="tiny", entries=(
        SuiteEntry(task=MQAR(seq_len=16, num_kv_pairs=2, vocab_size=16), n_train=32, n_test=8),))
    budget = Budget(steps=3, batch_size=4, decode_context=0)
    result = run_trial(arch, suite, budget)
    assert result.status != "failed", result.failure
    assert result.kernels["selective_scan"] == native.NATIVE
    assert "fft_long_conv" not in result.kernels  # no Hyena layer: never ran, not recorded
    with native.disabled():
        fallback = run_trial(arch, suite, budget)
    assert fallback.kernels["selective_scan"] == native.PYTORCH
    # three steps from the same seed: the same losses up to floating-point order
    (name,) = result.tasks
    assert abs(fallback.tasks[name].metrics["loss"] - result.tasks[name].metrics["loss"]) < 1e-4
