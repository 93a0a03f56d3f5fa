"""Precision policy of the ops: compute in at least fp32 whatever the inputs or autocast say.

bf16 and fp16 inputs are upcast (fp64 is kept), and autocast is switched off inside an op, so
that a mixer run under `torch.autocast` does not have its scans and contractions silently
lowered to bf16. Each op returns its input's dtype.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable)


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    """The promotion of fp32 with the dtypes of the given (non-None) tensors."""
    dtype = torch.float32
    for t in tensors:
        if t is not None:
            dtype = torch.promote_types(dtype, t.dtype)
    return dtype


def upcast(t: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """`t` in `dtype` (no copy when it already is), or None."""
    return None if t is None else t.to(dtype)


def autocast_off(device: torch.device):
    """A context with autocast disabled on `device`'s type (a no-op when it is not enabled)."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def full_precision(fn: F) -> F:
    """Run `fn` with autocast off on the device of its first tensor argument."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        first = next(v for v in (*args, *kwargs.values()) if isinstance(v, Tensor))
        with autocast_off(first.device):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
