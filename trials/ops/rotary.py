"""Rotary position embeddings (RoPE) as pure functions.

Shape legend: B batch, H heads, N positions, hd head dim (even).

Channel i of the first half and channel i + hd/2 form a pair that is rotated by the angle
pos * theta^(-2i/hd). A query rotated at position m and a key rotated at position n then have a
dot product that depends only on m - n, which is what lets a decoder cache keys already rotated
at their own position and never touch them again.

The tables are computed on the fly from the positions, on the input's device and in fp32, so
nothing here is state or a parameter; the rotation is done in fp32 and cast back, so that bf16
activations are not rotated with bf16 sines at large positions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rope_tables(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos and sin of every (position, frequency) angle, each (N, hd/2) in fp32.

    positions: (N,) integer or float positions, on the device the tables should live on.
    """
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
    exponents = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32)
    inv_freq = theta ** (-exponents / head_dim)  # (hd/2,)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (N, hd/2)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x: (..., N, hd) by tables cos, sin: (N, hd/2); returns x's dtype."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (..., N, hd/2) each
    rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.to(x.dtype)


def rotate(x: Tensor, start: int, theta: float) -> Tensor:
    """Rotate x: (B, H, N, hd) whose positions are start, start+1, ..., start+N-1.

    With N = 1 this rotates a single decoding position.
    """
    positions = torch.arange(start, start + x.shape[-2], device=x.device)
    cos, sin = rope_tables(positions, x.shape[-1], theta)
    return apply_rope(x, cos, sin)
