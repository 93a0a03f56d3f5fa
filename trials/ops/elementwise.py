"""Elementwise ops around the GEMMs, each one pass over memory on the CPU where PyTorch takes
several: the gated unit of a GLU feed-forward, and Mamba-2's softplus step size (Mamba-1's
fuses its dt projection as well: `trials.ops.step_size`).

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

`rglru_gates(gate_a, gate_x, x, coef)`: the RG-LRU's decay a and input b from the
pre-activations of its two gates, the conv output and one coefficient per channel (Griffin,
`trials.mixers.rglru`): ten PyTorch ops each way (two sigmoids, exp, expm1, clamp, sqrt and
the products), one pass each way on the CPU.

`softplus(x)` = log(1 + e^x), x itself above 20 (`F.softplus`'s threshold, which is the
reference): PyTorch's CPU kernel takes its log1p a value at a time (about 2 ns a value, four
times an exp); the kernel's log is a vectorised polynomial. Its gradient is sigmoid(x).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from trials.ops import dispatch, native
from trials.ops._precision import compute_dtype, full_precision

dispatch.register("glu", native=True)
dispatch.register("rglru_gates", native=True)
dispatch.register("softplus", native=True)

# sqrt(1 - a^2) has an infinite slope at a = 1 (r_t -> 0): flooring 1 - a^2 bounds the
# gradient to 0.5/sqrt(floor) = 5e5 and changes the forward value by at most 1e-6.
RGLRU_SQRT_FLOOR = 1e-12


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


class _NativeRGLRUGates(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate_a: Tensor, gate_x: Tensor, x: Tensor, coef: Tensor):
        a, b = torch.empty_like(x), torch.empty_like(x)
        width = x.shape[-1]
        native.entry("rglru_gates_fwd", x)(
            *map(native.pointer, (gate_a, gate_x, x, coef, a, b)), x.numel() // width, width,
            RGLRU_SQRT_FLOOR, torch.get_num_threads())
        ctx.save_for_backward(gate_a, gate_x, x, coef)
        return a, b

    @staticmethod
    def backward(ctx, grad_a: Tensor | None, grad_b: Tensor | None):
        gate_a, gate_x, x, coef = ctx.saved_tensors
        width, threads = x.shape[-1], torch.get_num_threads()
        # held here: the kernel reads them after map() lets go
        grad_a = torch.zeros_like(x) if grad_a is None else grad_a.contiguous()
        grad_b = torch.zeros_like(x) if grad_b is None else grad_b.contiguous()
        grads = [torch.empty_like(x) for _ in range(3)]  # gate_a, gate_x, x
        coef_parts = x.new_empty(threads, width)
        native.entry("rglru_gates_bwd", x)(
            *map(native.pointer, (gate_a, gate_x, x, coef, grad_a, grad_b, *grads, coef_parts)),
            x.numel() // width, width, RGLRU_SQRT_FLOOR, threads)
        return (*grads, coef_parts.sum(0))


@full_precision
def rglru_gates(gate_a: Tensor, gate_x: Tensor, x: Tensor, coef: Tensor
                ) -> tuple[Tensor, Tensor]:
    """The RG-LRU's recurrence h_t = a_t h_{t-1} + b_t, its a and b (..., w) from the gates'
    pre-activations and the conv output (..., w) and coef (w,) = -c softplus(-Lambda) <= 0:

        r = sigmoid(gate_a), i = sigmoid(gate_x), a = exp(coef r),
        b = sqrt(max(1 - a^2, RGLRU_SQRT_FLOOR)) i x   (1 - a^2 as -expm1(2 coef r))

    Computed in at least fp32 (the mixer passes fp32), returned in x's dtype; see the module
    docstring."""
    dtype = compute_dtype(gate_a, gate_x, x, coef)
    inputs = tuple(t.to(dtype) for t in (gate_a, gate_x, x, coef))
    fits = gate_a.shape == gate_x.shape == x.shape and coef.shape == x.shape[-1:]
    if dispatch.kernel_for("rglru_gates", inputs[2], native_fits=fits) == dispatch.NATIVE:
        a, b = _NativeRGLRUGates.apply(*(t.contiguous() for t in inputs))
    else:
        a, b = naive_rglru_gates(*inputs)
    return a.to(x.dtype), b.to(x.dtype)


def naive_rglru_gates(gate_a: Tensor, gate_x: Tensor, x: Tensor, coef: Tensor
                      ) -> tuple[Tensor, Tensor]:
    """The composite, autograd through each op: the reference and the fallback."""
    log_a = coef * torch.sigmoid(gate_a)  # <= 0
    multiplier = torch.sqrt((-torch.expm1(2.0 * log_a)).clamp_min(RGLRU_SQRT_FLOOR))
    return torch.exp(log_a), multiplier * (torch.sigmoid(gate_x) * x)


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
