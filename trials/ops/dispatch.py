"""Which implementation an op runs: the one rule, and the registry each op enters where it is
defined (`register`), so that what a trial records cannot drift from what the ops do.

    tensor on   compute dtype   and                              implementation (recorded)
    cpu         fp32, fp64      the native library is built   -> "native-cpu"  (`native`)
    cuda        the library's   the op's fused library imports -> its name, e.g.
                (fp32)                                            "fla.chunk_simple_gla"
    anything else                                              -> "pytorch"     (the op's
                                                                   tensor path, the fallback)

The fused libraries, each behind the op's own signature (the op module says how its arguments
map onto the library's): `selective_scan` -> mamba_ssm's `selective_scan_fn`, `causal_conv1d`
-> causal_conv1d's `causal_conv1d_fn`, `ssd` -> flash-linear-attention's `chunk_simple_gla`,
`linear_scan` -> flash-linear-attention's `fused_recurrent_hgrn`. Where a library's limits
exclude a call (causal_conv1d takes widths 2-4 and channels divisible by 8), that call, and
only that call, runs the PyTorch path; the op's module says so and tells `kernel_for`.

What a trial records is what ran, not what the rule would pick: every call asks `kernel_for`,
which notes its answer in each open `recording()` (a set update per call, no device sync). An op
that ran several implementations in one trial (a model whose convs do not all fit the library,
a dtype that changed) records them all, sorted and joined by "+", e.g.
"causal_conv1d+pytorch"; an op that never ran is not recorded.

A library that is not installed is simply not used. One that is installed but fails to import
(a CUDA build that does not match the driver, a missing extension), or a dtype the library does
not take (fp64 on CUDA), gives one RuntimeWarning and the PyTorch path: never a failed trial.

`HNAS_KERNELS=pytorch` forces the PyTorch path everywhere (silently: it was asked for);
`HNAS_KERNELS=interpret` also offers the fused libraries CPU tensors, which is how the tests
run flash-linear-attention's Triton kernels in Triton's interpreter (`TRITON_INTERPRET=1`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from trials.ops import native

NATIVE = native.NATIVE
PYTORCH = native.PYTORCH
ENV_CHOICE = native.ENV_CHOICE  # "pytorch" | "interpret" | unset
INTERPRET = "interpret"
SEVERAL = "+"  # joins the implementations of an op that ran more than one in a trial


@dataclass(frozen=True)
class Fused:
    """A fused kernel library's function, by the name a trial records."""

    name: str  # e.g. "fla.chunk_simple_gla"
    module: str  # imported on first use, e.g. "fla.ops.simple_gla"
    function: str
    dtypes: tuple[torch.dtype, ...] = (torch.float32,)


@dataclass(frozen=True)
class OpKernels:
    native: bool  # has an entry point in the native CPU library
    fused: Fused | None


OPS: dict[str, OpKernels] = {}

_lock = threading.Lock()
_loaded: dict[Fused, Callable | None] = {}
_warned: set[tuple] = set()
_forced_off = False
_recordings: list[Ran] = []  # the open `recording()` blocks, innermost last


def register(op: str, *, native: bool = False, fused: Fused | None = None) -> None:
    """Declare, where the op is defined, which implementations it has beside its PyTorch path."""
    OPS[op] = OpKernels(native=native, fused=fused)


def _choice() -> str:
    return os.environ.get(ENV_CHOICE, "").strip().lower()


def _warn_once(key: tuple, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"hybrid-nas: {message}", RuntimeWarning, stacklevel=4)


def fused_function(fused: Fused) -> Callable | None:
    """The library's function, or None when its package is absent or does not import."""
    if fused not in _loaded:
        with _lock:
            if fused not in _loaded:
                _loaded[fused] = _import(fused)
    return _loaded[fused]


def _import(fused: Fused) -> Callable | None:
    top = fused.module.split(".")[0]
    if importlib.util.find_spec(top) is None:
        return None  # not installed: nothing to say
    try:
        return getattr(importlib.import_module(fused.module), fused.function)
    except Exception as error:  # a broken install raises anything: OSError, RuntimeError, ...
        _warn_once(("import", top), f"{top} is installed but {fused.module}.{fused.function} "
                   f"did not import ({type(error).__name__}: {error}); its op runs in PyTorch")
        return None


def _choose(op: str, device_type: str, dtype: torch.dtype) -> str:
    choice = _choice()
    if _forced_off or choice == PYTORCH:
        return PYTORCH
    kernels = OPS[op]
    fused_here = device_type == "cuda" or (choice == INTERPRET and device_type == "cpu")
    if kernels.fused is not None and fused_here and fused_function(kernels.fused) is not None:
        if dtype in kernels.fused.dtypes:
            return kernels.fused.name
        _warn_once(("dtype", op, dtype), f"{kernels.fused.name} does not take {dtype} "
                   f"tensors; {op} runs in PyTorch")
        return PYTORCH
    if kernels.native and native.runs_on(device_type, dtype):
        return NATIVE
    return PYTORCH


def kernel_for(op: str, tensor: torch.Tensor, *, fused_fits: bool = True,
               native_fits: bool = True) -> str:
    """The implementation this call of `op` runs for inputs like `tensor` (in the op's compute
    dtype), noted in every open `recording()`. `fused_fits=False`: the call is outside the
    fused library's limits, so where the rule picks the library it runs the PyTorch path;
    `native_fits=False` likewise for the native CPU kernel (an activation it has no code for)."""
    kernel = _choose(op, tensor.device.type, tensor.dtype)
    if not fused_fits and OPS[op].fused is not None and kernel == OPS[op].fused.name:
        kernel = PYTORCH
    if not native_fits and kernel == NATIVE:
        kernel = PYTORCH
    note_ran(op, kernel)
    return kernel


def note_ran(op: str, kernel: str) -> None:
    """Note in every open `recording()` that `op` ran `kernel` (also for calls made in another
    process on this trial's behalf)."""
    for ran in _recordings:
        ran.note(op, kernel)


def planned_kernels(device_type: str, dtype: torch.dtype = torch.float32) -> dict[str, str]:
    """op -> what the rule picks on `device_type` ("cpu", "cuda") for `dtype` compute, before
    any call (a call outside a library's limits may still run PyTorch): a prediction, which
    tests use to check the rule for CUDA without a GPU; a trial records what ran
    (`recording()`)."""
    return {op: _choose(op, device_type, dtype) for op in sorted(OPS)}


class Ran:
    """op -> the implementations its calls ran while a `recording()` block was open."""

    def __init__(self) -> None:
        self.by_op: dict[str, set[str]] = {}

    def note(self, op: str, kernel: str) -> None:
        self.by_op.setdefault(op, set()).add(kernel)

    def kernels(self) -> dict[str, str]:
        """What a trial records: op -> implementation, several joined by `SEVERAL`."""
        return {op: SEVERAL.join(sorted(names)) for op, names in sorted(self.by_op.items())}


@contextlib.contextmanager
def recording() -> Iterator[Ran]:
    """Note which implementation every op call in the block runs (one trial per process at a
    time; nested blocks each see their own calls and their inner blocks')."""
    ran = Ran()
    _recordings.append(ran)
    try:
        yield ran
    finally:
        _recordings.remove(ran)


@contextlib.contextmanager
def disabled():
    """Run the block on the PyTorch path for every op and device (no native, no fused)."""
    global _forced_off
    previous, _forced_off = _forced_off, True
    try:
        with native.disabled():
            yield
    finally:
        _forced_off = previous
