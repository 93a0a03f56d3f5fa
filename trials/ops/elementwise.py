"""Elementwise ops around the GEMMs, each one pass over memory on the CPU where PyTorch takes
several: the gated unit of a GLU feed-forward, and Mamba's softplus step size.

`glu(gate, up, act)`: h = act(gate) * up (SwiGLU, GeGLU), any shape, gate and up alike (F =
d_ff wide rows from the MLP's projections). With act = silu (SwiGLU: most presets' FFN and each
MoE expert) or the tanh GELU (`partial(F.gelu, approximate="tanh")`: GeGLU, Griffin's and
RecurrentGemma's FFN) on the CPU in fp32 or fp64, the compiled kernel (`trials.ops.native`)
does the forward in one pass over gate and up, and the backward in one pass that writes both
gradients:

    dL/dup   = gh * act(gate)
    dL/dgate = gh * up * act'(gate)     silu: s (1 + gate (1 - s)), s = sigmoid(gate)

PyTorch's composite takes two passes forward (silu, then the product) and three backward (two
products and silu's backward), each a separate op over an F-wide activation. Any other
activation, dtype or device runs `naive_glu`, the composite itself (the reference, and exactly
what the MLP computed before: under autocast its bf16 rounding is unchanged).

`softplus(x)` = log(1 + e^x), x itself above 20 (`F.softplus`'s threshold, which is the
reference): PyTorch's CPU kernel takes its log1p a value at a time (about 2 ns a value, four
times an exp); the kernel's log is a vectorised polynomial. Its gradient is sigmoid(x).
"""

from __future__ import annotations

from typing import Callable

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from trials.ops import dispatch, native

dispatch.register("glu", native=True)
dispatch.register("softplus", native=True)


class _NativeGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate: Tensor, up: Tensor, kernel: str) -> Tensor:
        h = torch.empty_like(gate)
        native.entry(f"glu_{kernel}_fwd", gate)(*map(native.pointer, (gate, up, h)),
                                                gate.numel(), torch.get_num_threads())
        ctx.save_for_backward(gate, up)
        ctx.kernel = kernel
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        gate, up = ctx.saved_tensors
        grad_gate, grad_up = torch.empty_like(gate), torch.empty_like(up)
        grad_h = grad_h.contiguous()  # held here: the kernel reads it after map() lets go
        native.entry(f"glu_{ctx.kernel}_bwd", gate)(
            *map(native.pointer, (gate, up, grad_h, grad_gate, grad_up)),
            gate.numel(), torch.get_num_threads())
        return grad_gate, grad_up, None


def _native_activation(act: Callable[[Tensor], Tensor]) -> str | None:
    """The kernel suffix of an activation with a compiled GLU ("silu", "gelu_tanh"), or None."""
    if act is F.silu:
        return "silu"
    if (isinstance(act, functools.partial) and act.func is F.gelu and not act.args
            and act.keywords == {"approximate": "tanh"}):
        return "gelu_tanh"
    return None


def glu(gate: Tensor, up: Tensor, act: Callable[[Tensor], Tensor] = F.silu) -> Tensor:
    """act(gate) * up for gate and up of one shape; see the module docstring."""
    kernel = _native_activation(act)
    fits = (kernel is not None and gate.shape == up.shape and gate.dtype == up.dtype
            and gate.device == up.device and gate.dtype in (torch.float32, torch.float64)
            and not torch.is_autocast_enabled(gate.device.type))
    if dispatch.kernel_for("glu", gate, native_fits=fits) == dispatch.NATIVE:
        return _NativeGLU.apply(gate.contiguous(), up.contiguous(), kernel)
    return naive_glu(gate, up, act)


def naive_glu(gate: Tensor, up: Tensor, act: Callable[[Tensor], Tensor] = F.silu) -> Tensor:
    """The composite, autograd through each op: the reference and the fallback."""
    return act(gate) * up


class _NativeSoftplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = torch.empty_like(x)
        native.entry("softplus_fwd", x)(*map(native.pointer, (x, y)), x.numel(),
                                        torch.get_num_threads())
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        (x,) = ctx.saved_tensors
        grad_x = torch.empty_like(x)
        grad_y = grad_y.contiguous()  # held here: the kernel reads it after map() lets go
        native.entry("softplus_bwd", x)(*map(native.pointer, (x, grad_y, grad_x)), x.numel(),
                                        torch.get_num_threads())
        return grad_x


def softplus(x: Tensor) -> Tensor:
    """log(1 + e^x) elementwise, as `F.softplus(x)`; see the module docstring."""
    fits = x.dtype in (torch.float32, torch.float64) \
        and not torch.is_autocast_enabled(x.device.type)
    if dispatch.kernel_for("softplus", x, native_fits=fits) == dispatch.NATIVE:
        return _NativeSoftplus.apply(x.contiguous())
    return F.softplus(x)
