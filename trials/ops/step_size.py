"""Mamba-1's step size as one op: dt = softplus(x W^T + b), computed in at least fp32.

Shape legend: x (..., R), the low-rank dt that x_proj produces (R = dt_rank = ceil(d/16));
weight (D, R) and bias (D,), dt_proj's; dt (..., D), D = the mixer's inner channels.

    pre = x W^T + b         (..., D)
    dt  = softplus(pre)     log(1 + e^pre), pre itself above 20 (`F.softplus`'s threshold)

    dL/dpre = g sigmoid(pre)   (g itself above 20)
    dL/dx = dL/dpre W,  dL/dW = sum_rows dL/dpre^T x,  dL/db = sum_rows dL/dpre

At the proxies' widths R is 1-8, and a GEMM library runs the (rows, R) x (R, D) products (the
forward's, and the backward's two) far below its peak (MKL at rows 2048, R 4, D 128: 20-40
GFLOP/s, 7-11 under load, against 100-160 on the models' other projections), while softplus,
its gradient and the bias gradient's sum are each one more pass over a (rows, D) activation.
On the CPU in fp32 or fp64 the compiled kernel (`trials.ops.native`) does the forward in one
pass over the rows (the pre-activation of a row in cache, then its softplus) and the backward
in one pass that recomputes the pre-activation and writes all three gradients. It reads x at
any row stride, so that the dt slice of x_proj's (..., R + 2N) output is read in place, and
keeps nothing for the backward pass beyond the inputs (the composite keeps the (..., D)
pre-activation). The softplus itself (an exp and a log1p a value, the same kernel as the
`softplus` op's) is most of the op's time on either path, so the kernel gains what it saves
around it: 15-20% of the op's forward and backward at R <= 4 (`benchmarks/step_size.py`).

It runs when x, weight and bias are CPU fp32 or fp64 tensors of one dtype, autocast is off and
R <= `MAX_NATIVE_RANK`; anything else runs `softplus(F.linear(x, weight, bias))` in the
promotion of fp32 with the inputs' dtypes: under autocast the product stays autocast's bf16
one, then the step size is upcast before the softplus (in bf16 small step sizes would round to
zero and freeze the state), which is what the mixer computed before this op existed.

Returns fp32 for fp32, bf16 or fp16 inputs and fp64 for fp64 (not the input's dtype: the
step size stays in fp32 however the model runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trials.ops import dispatch, native
from trials.ops._precision import compute_dtype, full_precision, upcast
from trials.ops.elementwise import softplus

dispatch.register("softplus_linear", native=True)

# The largest rank the native kernel takes. Both paths pay the same softplus (exp and log1p are
# most of the op), so the kernel gains what it saves on the products, the bias sum and the extra
# passes, and each further rank costs it a pass over the row (a GEMM blocks over rows instead).
# Measured (`benchmarks/step_size.py`, fwd + bwd at rows 2048, D 128, one thread, native /
# fallback with softplus on its own kernel): 0.81-0.86 at R 1, 0.83-0.84 at R 4, 0.89-0.93 at
# R 5, 0.97-1.02 at R 6, 1.00-1.07 at R 7 and 8, 1.10-1.19 at R 10 and 12, 1.28-1.35 at R 16.
MAX_NATIVE_RANK = 6


class _NativeSoftplusLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        # x: (rows, R) with unit column stride; weight (D, R), bias (D,) contiguous
        rows, rank = x.shape
        width = weight.shape[0]
        weight_t = weight.t().contiguous()  # (R, D): the kernel's loops run over D
        y = x.new_empty(rows, width)
        native.entry("softplus_linear_fwd", x)(
            *map(native.pointer, (x, weight_t, bias, y)), x.stride(0), rows, rank, width,
            torch.get_num_threads())
        ctx.save_for_backward(x, weight_t, bias)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, weight_t, bias = ctx.saved_tensors
        (rows, rank), width = x.shape, weight_t.shape[1]
        threads = torch.get_num_threads()
        grad_y = grad_y.contiguous()  # held here: the kernel reads it after map() lets go
        grad_x = x.new_empty(rows, rank)
        weight_parts = x.new_empty(threads, rank, width)
        bias_parts = None if bias is None else x.new_empty(threads, width)
        native.entry("softplus_linear_bwd", x)(
            *map(native.pointer, (x, weight_t, bias, grad_y, grad_x, weight_parts, bias_parts)),
            x.stride(0), rows, rank, width, threads)
        grad_bias = None if bias_parts is None else bias_parts.sum(0)
        return grad_x, weight_parts.sum(0).t(), grad_bias


def _native_fits(x: Tensor, weight: Tensor, bias: Tensor | None) -> bool:
    rank = weight.shape[-1]
    tensors = (x, weight) if bias is None else (x, weight, bias)
    return (x.dtype in (torch.float32, torch.float64)
            and all(t.dtype == x.dtype and t.device == x.device for t in tensors)
            and weight.dim() == 2 and 1 <= rank <= MAX_NATIVE_RANK and x.shape[-1] == rank
            and (bias is None or bias.shape == weight.shape[:1])
            and not torch.is_autocast_enabled(x.device.type))


def softplus_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """softplus(x @ weight.T + bias): x (..., R), weight (D, R), bias (D,) or None ->
    (..., D) in fp32 (fp64 for fp64 inputs); see the module docstring."""
    kernel = dispatch.kernel_for("softplus_linear", x,
                                 native_fits=_native_fits(x, weight, bias))
    if kernel == dispatch.NATIVE:
        rows = x.reshape(-1, x.shape[-1])  # a view for a slice of a wider last dim
        if rows.stride(-1) != 1:
            rows = rows.contiguous()
        dt = _NativeSoftplusLinear.apply(rows, weight.contiguous(),
                                         None if bias is None else bias.contiguous())
        return dt.view(*x.shape[:-1], weight.shape[0])
    return softplus(F.linear(x, weight, bias).to(compute_dtype(x, weight, bias)))


@full_precision
def naive_softplus_linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The composite in the promotion of fp32 with the inputs' dtypes, autograd through each op:
    the reference."""
    dtype = compute_dtype(x, weight, bias)
    return F.softplus(F.linear(x.to(dtype), weight.to(dtype), upcast(bias, dtype)))
