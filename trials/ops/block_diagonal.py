"""A block-diagonal linear map as one op: Griffin's RG-LRU gates.

Shape legend: x (..., H I); weight (H, I, J), H independent (I x J) blocks; bias (H J,) or None;
y (..., H J).

    y[..., h J + j] = bias[h J + j] + sum_i x[..., h I + i] weight[h, i, j]

    dL/dx[..., h I + i] = sum_j g[..., h J + j] weight[h, i, j]
    dL/dweight[h]       = sum_rows x_h^T g_h,     dL/dbias = sum_rows g

The PyTorch path is an einsum, which runs a batched GEMM over (H, rows, I) after copying x out
of its (rows, H, I) layout and the output back into it, forward and backward. At the proxies'
blocks (16 x 16) the copies and the GEMM library's per-call cost are most of the op: about 20
GFLOP/s forward and backward together. On the CPU in fp32 or fp64 the compiled kernel
(`trials.ops.native`) reads x in place, keeps each head's outputs for a few rows in registers
over i, and writes y in its final layout; the backward's dL/dx is the same kernel with the
blocks transposed, and the weight's and bias's gradients are per-thread sums over the rows.

It runs when x, weight and bias are CPU fp32 or fp64 tensors of one dtype, autocast is off and
the blocks are at most `MAX_NATIVE_BLOCK` wide; anything else is the einsum, autocast's bf16
product included, as the gates always computed it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trials.ops import dispatch, native

dispatch.register("block_diagonal_linear", native=True)

# The widest block (I and J) the kernel takes: past it the GEMM library's blocking wins. Measured
# forward + backward, einsum / native, one thread, batch 32, alternating in one process: blocks
# of 16 (4 heads at width 64) 1.14x at seq 64, 1.84x at 256, 1.72x at 1024, and 1.01x for 16
# heads at width 256; blocks of 32 0.83x, of 128 0.37x.
MAX_NATIVE_BLOCK = 16


class _NativeBlockDiagonal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # x (rows, H I) and weight (H, I, J) contiguous, bias (H J,) contiguous or None
        blocks, fan_in, fan_out = weight.shape
        rows = x.shape[0]
        y = x.new_empty(rows, blocks * fan_out)
        native.entry("block_diagonal_fwd", x)(
            *map(native.pointer, (x, weight, bias, y)), rows, blocks, fan_in, fan_out,
            torch.get_num_threads())
        ctx.has_bias = bias is not None
        ctx.save_for_backward(x, weight)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, weight = ctx.saved_tensors
        blocks, fan_in, fan_out = weight.shape
        rows, threads = x.shape[0], torch.get_num_threads()
        weight_t = weight.transpose(1, 2).contiguous()  # (H, J, I): dL/dx is y's kernel on it
        grad_y = grad_y.contiguous()  # held here: the kernel reads it after map() lets go
        grad_x = torch.empty_like(x)
        weight_parts = x.new_empty(threads, blocks, fan_in, fan_out)
        bias_parts = x.new_empty(threads, blocks * fan_out) if ctx.has_bias else None
        native.entry("block_diagonal_bwd", x)(
            *map(native.pointer, (x, weight_t, grad_y, grad_x, weight_parts, bias_parts)),
            rows, blocks, fan_in, fan_out, threads)
        grad_bias = None if bias_parts is None else bias_parts.sum(0)
        return grad_x, weight_parts.sum(0), grad_bias


def _native_fits(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (x.dtype in (torch.float32, torch.float64)
            and all(t.dtype == x.dtype and t.device == x.device for t in tensors)
            and max(weight.shape[1:]) <= MAX_NATIVE_BLOCK
            and not torch.is_autocast_enabled(x.device.type))


def block_diagonal_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (..., H I) through the H blocks of weight (H, I, J), plus bias (H J,) -> (..., H J);
    see the module docstring. Computed in x's dtype (under autocast, autocast's)."""
    blocks, fan_in, fan_out = weight.shape
    if x.shape[-1] != blocks * fan_in:
        raise ValueError(f"x's last dim {x.shape[-1]} is not {blocks} blocks of {fan_in}")
    if bias is not None and bias.shape != (blocks * fan_out,):
        raise ValueError(f"bias of shape {tuple(bias.shape)}, expected ({blocks * fan_out},)")
    kernel = dispatch.kernel_for("block_diagonal_linear", x,
                                 native_fits=_native_fits(x, weight, bias))
    if kernel == dispatch.NATIVE:
        rows = x.reshape(-1, x.shape[-1]).contiguous()
        y = _NativeBlockDiagonal.apply(rows, weight.contiguous(),
                                       None if bias is None else bias.contiguous())
        return y.view(*x.shape[:-1], blocks * fan_out)
    return naive_block_diagonal_linear(x, weight, bias)


def naive_block_diagonal_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """The einsum over x's blocks, autograd through it: the reference and the fallback."""
    blocks, fan_in, _ = weight.shape
    y = torch.einsum("...hi,hij->...hj", x.unflatten(-1, (blocks, fan_in)), weight).flatten(-2)
    return y if bias is None else y + bias
