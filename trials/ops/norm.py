"""RMSNorm over the last dim as one op with its own backward pass.

    y = (x / sqrt(mean(x^2) + eps)).to(x.dtype) * weight        statistics in fp32

The same maths as `naive_rms_norm` (its reference), which `trials.norm.RMSNorm` runs through this op. Autograd through
that composite keeps five full-size tensors and walks about ten passes backward; here the
forward reads x twice (the norm, then the scaled product) and the backward, with x_hat = x / rms
kept, is

    dL/dweight = sum over rows of g * x_hat
    dL/dx      = (g * weight - x_hat * mean(g * weight * x_hat)) / rms

On the CPU in fp32 or fp64 the compiled kernel (`trials.ops.native`) runs each pass in one
sweep over the rows: it keeps only the row's 1 / rms for the backward pass and recomputes x_hat
from x there, where the PyTorch op above takes four to six tensor ops each way.

For inputs that are not fp32 or fp64 (bf16 activations), or a weight of another dtype, the op
runs the composite itself, so that its rounding is exactly the module's.

`add_rms_norm(x, delta, ...)` is a pre-norm block's residual add and the next norm as one op,
returning both the sum (the residual stream) and its norm. The CPU kernel sweeps each row once
where the add and the norm took a pass each, and its backward pass adds the residual stream's
own gradient in the same sweep, where autograd would sum the two with one more pass. Elsewhere
it is the add, then `rms_norm`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trials.ops import dispatch, native

dispatch.register("rms_norm", native=True)
dispatch.register("add_rms_norm", native=True)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        width = x.shape[-1]
        mean_square = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(width)
        inv_rms = mean_square.add_(eps).rsqrt_()  # (..., 1)
        x_hat = x * inv_rms
        ctx.save_for_backward(x_hat, inv_rms, weight)
        return x_hat * weight

    @staticmethod
    def backward(ctx, grad: Tensor):
        x_hat, inv_rms, weight = ctx.saved_tensors
        product = grad * x_hat
        grad_weight = product.reshape(-1, product.shape[-1]).sum(0)
        grad_x_hat = grad * weight
        dot = torch.mul(grad_x_hat, x_hat, out=product).mean(-1, keepdim=True)
        grad_x = grad_x_hat.addcmul_(x_hat, dot, value=-1.0).mul_(inv_rms)
        return grad_x, grad_weight, None


class _NativeRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        width = x.shape[-1]
        rows = x.numel() // width
        y, inv_rms = torch.empty_like(x), x.new_empty(rows)
        native.entry("rms_norm_fwd", x)(*map(native.pointer, (x, weight, y, inv_rms)), rows,
                                        width, eps, torch.get_num_threads())
        ctx.save_for_backward(x, weight, inv_rms)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, inv_rms = ctx.saved_tensors
        width = x.shape[-1]
        threads = torch.get_num_threads()
        grad_x, grad_weight_parts = torch.empty_like(x), x.new_empty(threads, width)
        grad = grad.contiguous()  # held here: the kernel reads it after map() lets go
        native.entry("rms_norm_bwd", x)(
            *map(native.pointer, (x, weight, inv_rms, grad, grad_x,
                                  grad_weight_parts)),
            x.numel() // width, width, threads)
        return grad_x, grad_weight_parts.sum(0), None


class _NativeAddRMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, delta: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        width = x.shape[-1]
        rows = x.numel() // width
        total, y, inv_rms = torch.empty_like(x), torch.empty_like(x), x.new_empty(rows)
        native.entry("add_rms_norm_fwd", x)(
            *map(native.pointer, (x, delta, weight, total, y, inv_rms)), rows, width, eps,
            torch.get_num_threads())
        ctx.save_for_backward(total, weight, inv_rms)
        ctx.set_materialize_grads(False)  # an unused output's gradient stays None: no zeros
        return total, y

    @staticmethod
    def backward(ctx, grad_total: Tensor | None, grad_y: Tensor | None):
        total, weight, inv_rms = ctx.saved_tensors
        if grad_y is None:  # only the sum was used
            return grad_total, grad_total, None, None
        width = total.shape[-1]
        threads = torch.get_num_threads()
        grad_x, grad_weight_parts = torch.empty_like(total), total.new_empty(threads, width)
        grad_y = grad_y.contiguous()  # held here: the kernel reads them after map() lets go
        grad_total = None if grad_total is None else grad_total.contiguous()
        native.entry("add_rms_norm_bwd", total)(
            *map(native.pointer, (total, weight, inv_rms, grad_y, grad_total, grad_x,
                                  grad_weight_parts)),
            total.numel() // width, width, threads)
        return grad_x, grad_x, grad_weight_parts.sum(0), None


def _exact(x: Tensor, weight: Tensor) -> bool:
    """Inputs the native kernels compute with the composite's own rounding."""
    return x.dtype in (torch.float32, torch.float64) and weight.dtype == x.dtype \
        and not torch.is_autocast_enabled(x.device.type)


def add_rms_norm(x: Tensor, delta: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(x + delta, RMSNorm of x + delta) for x, delta (..., d) of one shape and weight (d,)."""
    fits = _exact(x, weight) and delta.dtype == x.dtype and delta.shape == x.shape
    kernel = dispatch.kernel_for("add_rms_norm", x, native_fits=fits)
    if kernel == dispatch.NATIVE:
        return _NativeAddRMSNorm.apply(x.contiguous(), delta.contiguous(), weight.contiguous(),
                                       eps)
    total = x + delta
    return total, rms_norm(total, weight, eps)


def naive_add_rms_norm(x: Tensor, delta: Tensor, weight: Tensor,
                       eps: float) -> tuple[Tensor, Tensor]:
    """The reference: the add, then the composite norm."""
    total = x + delta
    return total, naive_rms_norm(total, weight, eps)


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """RMSNorm of x (..., d) with weight (d,); see the module docstring."""
    exact = _exact(x, weight)
    kernel = dispatch.kernel_for("rms_norm", x, native_fits=exact)
    if kernel == dispatch.NATIVE:
        return _NativeRMSNorm.apply(x.contiguous(), weight.contiguous(), eps)
    if exact:
        return _RMSNorm.apply(x, weight, eps)
    return naive_rms_norm(x, weight, eps)


def naive_rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """The composite, autograd through every op: the reference, and the path for bf16."""
    x32 = x.float()  # statistics in fp32 so that bf16 activations do not lose the mean square
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight
