"""Compiled CPU kernels for the recurrences and for the elementwise and row-wise ops around the
GEMMs (`scan_kernels.cpp`), built once per machine.

The rule (`trials.ops.dispatch`, recorded with every trial): an op with a native kernel runs
it when its tensors are on the CPU in fp32 or fp64 and the library is available; otherwise it
runs its pure-PyTorch fast path (or a fused GPU library on CUDA), and the PyTorch path stays the
fallback and, beside the `naive_*` references, what the native kernels are tested against.

The library is plain C++ with C entry points, loaded with ctypes: no torch headers, so a build
takes seconds with any C++17 compiler (`$CXX`, else `c++` or `g++`): 12 s on a loaded 2-core
machine, most of it the attention kernels' 16 instantiations (3 s without). It is cached under
`$HNAS_KERNEL_CACHE` (default `~/.cache/hybrid-nas/kernels`), named by a hash of the source,
the flags, the compiler's version and the CPU's model and features, so every trial and process
on the machine reuses one build, and a cache shared with a different CPU never loads code
built for another instruction set. Builds go to a temporary file that is renamed into place,
so concurrent processes never see half a library; and processes that start together on a
fresh machine (a search's workers, the test suite's) build once: the first takes a lock file
beside the library, the others wait on it and load what it built.

No compiler, a failed build or `HNAS_KERNELS=pytorch` in the environment: one warning (none
for the explicit choice), and every op falls back to PyTorch. A trial never fails for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from filelock import FileLock

SOURCE = Path(__file__).with_name("scan_kernels.cpp")
ABI = 14  # must equal hnas_kernels_abi() in the source
# -fno-math-errno: sqrt inside a vector loop, not a call that may set errno (never read here)
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c++17", "-fopenmp", "-fPIC", "-shared")
ENV_CHOICE = "HNAS_KERNELS"  # "pytorch" forces the fallback; anything else (or unset): native
ENV_CACHE = "HNAS_KERNEL_CACHE"
BUILD_TIMEOUT_S = 180

NATIVE = "native-cpu"
PYTORCH = "pytorch"

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_loaded = False
_forced_off = False
_failure: str | None = None


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_signature() -> str:
    """Model name and feature flags, so that -march=native code is keyed by the CPU it fits."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    keep = [line for line in text.splitlines()
            if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(sorted(set(keep)))


def _cache_dir() -> Path:
    root = os.environ.get(ENV_CACHE)
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hybrid-nas" / "kernels"


def _library_path(compiler: str) -> Path:
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), version.encode(),
                 platform.machine().encode(), _cpu_signature().encode()):
        digest.update(part)
        digest.update(b"\0")
    return _cache_dir() / f"libhnas_scan-{digest.hexdigest()[:20]}.so"


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([compiler, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True,
                              text=True, timeout=BUILD_TIMEOUT_S)
        if done.returncode != 0:
            first = next((line for line in done.stderr.splitlines() if "error" in line),
                         done.stderr.strip().splitlines()[0] if done.stderr.strip() else "")
            raise RuntimeError(f"{Path(compiler).name} exited {done.returncode}: {first}")
        os.replace(tmp, target)  # atomic: another process sees the old state or the whole file
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _declare(lib: ctypes.CDLL) -> None:
    """Argument types of every entry point: (pointers, 64-bit sizes, ints) in that order."""
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    signatures = {
        "selective_scan_fwd": [p] * 12 + [i64] * 5 + [i32],
        "selective_scan_bwd": [p] * 19 + [i64] * 5 + [i32],
        "linear_scan_fwd": [p] * 4 + [i64] * 3 + [i32],
        "linear_scan_bwd": [p] * 7 + [i64] * 3 + [i32],
        "causal_conv_fwd": [p] * 5 + [i64] * 4 + [i32] * 2,
        "causal_conv_bwd": [p] * 9 + [i64] * 4 + [i32] * 2,
        "ssd_fwd": [p] * 10 + [i64] * 7 + [i32],
        "ssd_bwd": [p] * 16 + [i64] * 7 + [i32],
        "glu_silu_fwd": [p] * 3 + [i64] + [i32],
        "glu_silu_bwd": [p] * 5 + [i64] + [i32],
        "glu_gelu_tanh_fwd": [p] * 3 + [i64] + [i32],
        "glu_gelu_tanh_bwd": [p] * 5 + [i64] + [i32],
        "rms_norm_fwd": [p] * 4 + [i64] * 2 + [ctypes.c_double, i32],
        "rms_norm_bwd": [p] * 6 + [i64] * 2 + [i32],
        "add_rms_norm_fwd": [p] * 6 + [i64] * 2 + [ctypes.c_double, i32],
        "add_rms_norm_bwd": [p] * 7 + [i64] * 2 + [i32],
        "rope": [p] * 4 + [i64] * 5 + [i32] * 2,
        "rglru_gates_fwd": [p] * 6 + [i64] * 2 + [ctypes.c_double, i32],
        "rglru_gates_bwd": [p] * 10 + [i64] * 2 + [ctypes.c_double, i32],
        "softplus_fwd": [p] * 2 + [i64] + [i32],
        "softplus_bwd": [p] * 3 + [i64] + [i32],
        "softplus_linear_fwd": [p] * 4 + [i64] * 4 + [i32],
        "softplus_linear_bwd": [p] * 7 + [i64] * 4 + [i32],
        "exp": [p, i64, i32],
        "block_diagonal_fwd": [p] * 4 + [i64] * 4 + [i32],
        "block_diagonal_bwd": [p] * 6 + [i64] * 4 + [i32],
        "long_conv_fwd": [p] * 3 + [i64] * 3 + [i32],
        "long_conv_bwd": [p] * 5 + [i64] * 3 + [i32],
    }
    returning_status = {  # 0: ran; 1: no kernel for the call's sizes (attention's head dim)
        "attention_fwd": [p] * 6 + [i64] * 6 + [ctypes.c_double, i32],
        "attention_bwd": [p] * 10 + [i64] * 6 + [ctypes.c_double, i32],
    }
    for names, restype in ((signatures, None), (returning_status, ctypes.c_int)):
        for name, argtypes in names.items():
            for suffix in ("f32", "f64"):
                function = getattr(lib, f"hnas_{name}_{suffix}")
                function.argtypes, function.restype = argtypes, restype
    lib.hnas_kernels_abi.restype = ctypes.c_int


def _load() -> ctypes.CDLL | None:
    global _failure
    if os.environ.get(ENV_CHOICE, "").strip().lower() == PYTORCH:
        return None
    compiler = _compiler()
    if compiler is None:
        _failure = "no C++ compiler found (set CXX, or install g++)"
        return None
    try:
        path = _library_path(compiler)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # filelock (a torch dependency): released if its holder dies, and portable
            with FileLock(str(path) + ".lock"):
                if not path.exists():  # another process may have built it while we waited
                    _build(compiler, path)
        lib = ctypes.CDLL(str(path))
        _declare(lib)
        if lib.hnas_kernels_abi() != ABI:
            raise RuntimeError(f"{path.name} has ABI {lib.hnas_kernels_abi()}, expected {ABI}")
        return lib
    except (OSError, RuntimeError, subprocess.SubprocessError, AttributeError) as error:
        _failure = f"{type(error).__name__}: {error}"
        return None


def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (then the ops run in PyTorch). Built on first use."""
    global _library, _loaded
    if _forced_off:
        return None
    if not _loaded:
        with _lock:
            if not _loaded:
                _library = _load()
                _loaded = True
                if _library is None and _failure is not None:
                    warnings.warn(f"hybrid-nas: native CPU kernels unavailable ({_failure}); "
                                  "the scans run in PyTorch, slower but with the same results",
                                  RuntimeWarning, stacklevel=3)
    return _library


def failure() -> str | None:
    """Why the library did not load, or None."""
    library()
    return _failure


@contextlib.contextmanager
def disabled():
    """Run the block with the PyTorch fallback, as a machine without a compiler would."""
    global _forced_off
    previous, _forced_off = _forced_off, True
    try:
        yield
    finally:
        _forced_off = previous


def runs_on(device_type: str, dtype: torch.dtype) -> bool:
    """Whether the native kernels take tensors of this device type and dtype (and are built)."""
    return (device_type == "cpu" and dtype in (torch.float32, torch.float64)
            and library() is not None)


def kernel_for(*tensors) -> str:
    """Which implementation an op with a native kernel runs on the CPU for these tensors
    (`trials.ops.dispatch` holds the whole rule, GPU libraries included)."""
    first = tensors[0]
    return NATIVE if runs_on(first.device.type, first.dtype) else PYTORCH


def pointer(tensor) -> int | None:
    """A tensor's data address for the C entry points (None stays a null pointer).

    Only the address is passed: the caller holds the tensor until the call returns. A copy made
    inside the argument list (`*map(pointer, (x.contiguous(),))`) is freed when the unpacking
    drops the tuple, before the kernel reads it."""
    return None if tensor is None else tensor.data_ptr()


def entry(name: str, like: torch.Tensor):
    """The C entry point `hnas_<name>_<f32|f64>` for tensors of `like`'s dtype."""
    suffix = "f64" if like.dtype == torch.float64 else "f32"
    return getattr(library(), f"hnas_{name}_{suffix}")
