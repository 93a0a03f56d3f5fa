"""The dtype an op computes in: at least fp32 (bf16 and fp16 inputs are upcast), fp64 kept."""

from __future__ import annotations

import torch
from torch import Tensor


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
