"""Rotary position embeddings (RoPE) as pure functions.

Shape legend: B batch, H heads, N positions, hd head dim (even).

Channel i of the first half and channel i + hd/2 form a pair that is rotated by the angle
pos * theta^(-2i/hd). A query rotated at position m and a key rotated at position n then have a
dot product that depends only on m - n, which is what lets a decoder cache keys already rotated
at their own position and never touch them again.

The tables are computed from the positions, on the input's device and in fp32, so nothing here
is state or a parameter (`rope_tables_for` keeps the tables of 0..n-1 per head dim, theta and
device and slices them: a model's layers all rotate the same positions, and the table is a
constant). The rotation is done in fp32 (fp64 for fp64 inputs) and cast back, so that bf16
activations are not rotated with bf16 sines at large positions. It is its own autograd function: the gradient of a rotation
is the rotation by the opposite angle, so forward and backward are each four fused multiply-adds
over half the channels, written straight into the output.

`rotate_heads` rotates the (B, N, heads, hd) layout the projections produce, before the heads
are transposed out, and only the first `rotary_dim` channels of each head (partial RoPE). On
the CPU in fp32 or fp64 the compiled kernel (`trials.ops.native`) does it in one pass, the
unrotated channels copied alongside; PyTorch's path is `apply_rope` on the first channels and a
concatenation, each of its products broadcasting the tables over an 8-16 element inner
dimension, at a fraction of the memory speed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trials.ops import dispatch, native

dispatch.register("rope", native=True)


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


_TABLES: dict[tuple, tuple[Tensor, Tensor]] = {}  # (hd, theta, device) -> tables of 0..n-1


def rope_tables_for(start: int, length: int, head_dim: int, theta: float,
                    device: torch.device) -> tuple[Tensor, Tensor]:
    """`rope_tables` of positions start .. start+length-1, sliced from a cached table.

    The values are those of `rope_tables` itself (the same fp32 products, row by row). The
    table grows by doubling; it is built outside autograd and inference mode, so that it can
    be saved for a backward pass whatever mode the first call ran in.
    """
    key = (head_dim, float(theta), torch.device(device))
    cached = _TABLES.get(key)
    if cached is None or cached[0].shape[0] < start + length:
        size = max(start + length, 2 * cached[0].shape[0] if cached is not None else 0)
        with torch.inference_mode(False), torch.no_grad():
            cached = rope_tables(torch.arange(size, device=device), head_dim, theta)
        _TABLES[key] = cached
    return cached[0][start : start + length], cached[1][start : start + length]


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """[x1 cos - x2 sin, x1 sin + x2 cos] for the halves x1, x2 of x's last dim (fp32 x)."""
    x1, x2 = x.chunk(2, dim=-1)
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    o1, o2 = out.chunk(2, dim=-1)
    torch.mul(x1, cos, out=o1).addcmul_(x2, sin, value=-1.0)
    torch.mul(x1, sin, out=o2).addcmul_(x2, cos)
    return out


class _Rope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, -sin), None, None  # the rotation by the opposite angle


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x: (..., N, hd) by tables cos, sin: (N, hd/2) (or any shape that broadcasts
    against x's halves); returns x's dtype.

    The tables are constants here (no gradient flows into them).
    """
    dtype = torch.promote_types(x.dtype, torch.float32)  # at least fp32; fp64 stays
    return _Rope.apply(x.to(dtype), cos.to(dtype), sin.to(dtype)).to(x.dtype)


def rotate(x: Tensor, start: int, theta: float) -> Tensor:
    """Rotate x: (B, H, N, hd) whose positions are start, start+1, ..., start+N-1.

    With N = 1 this rotates a single decoding position.
    """
    cos, sin = rope_tables_for(start, x.shape[-2], x.shape[-1], theta, x.device)
    return apply_rope(x, cos, sin)


class _NativeRope(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, cos: Tensor, sin: Tensor, rotary_dim: int) -> Tensor:
        ctx.save_for_backward(cos, sin)
        ctx.rotary_dim = rotary_dim
        return _native_rope(x, cos, sin, rotary_dim, sign=1)

    @staticmethod
    def backward(ctx, grad: Tensor):
        cos, sin = ctx.saved_tensors
        return _native_rope(grad.contiguous(), cos, sin, ctx.rotary_dim, sign=-1), None, None, None


def _native_rope(x: Tensor, cos: Tensor, sin: Tensor, rotary_dim: int, sign: int) -> Tensor:
    """x (B, N, heads, hd) contiguous, tables (N, rotary_dim/2) in x's dtype."""
    out = torch.empty_like(x)
    native.entry("rope", x)(*map(native.pointer, (x, cos, sin, out)), *x.shape, rotary_dim,
                            sign, torch.get_num_threads())
    return out


def rotate_heads(x: Tensor, start: int, theta: float, rotary_dim: int) -> Tensor:
    """RoPE on the first `rotary_dim` channels of each head of x: (B, N, heads, hd) whose
    positions are start, ..., start+N-1; the other channels unchanged. Returns x's layout."""
    if rotary_dim == 0:
        return x
    cos, sin = rope_tables_for(start, x.shape[1], rotary_dim, theta, x.device)  # (N, rd/2)
    fits = x.dtype in (torch.float32, torch.float64) and x.dim() == 4 \
        and not torch.is_autocast_enabled(x.device.type)
    if dispatch.kernel_for("rope", x, native_fits=fits) == dispatch.NATIVE:
        return _NativeRope.apply(x.contiguous(), cos.to(x.dtype), sin.to(x.dtype), rotary_dim)
    cos, sin = cos[:, None, :], sin[:, None, :]  # over the heads
    if rotary_dim == x.shape[-1]:
        return apply_rope(x, cos, sin)
    return torch.cat((apply_rope(x[..., :rotary_dim], cos, sin), x[..., rotary_dim:]), dim=-1)
