"""Diagonal linear recurrence h_t = a_t * h_{t-1} + b_t, computed in parallel.

Used directly by the RG-LRU mixer. The in-place scan kernels here are also the building block
of `selective_scan`.

Shape legend: B batch, L length (time is always dim 1), C channels (any trailing dims).

The parallel algorithm is a work-efficient, in-place pairwise reduction (the up-sweep and
down-sweep of a Blelloch scan, written recursively over strided views of the time axis):

    up:    pair (t-1, t): u_t += a_t * u_{t-1};  a_t *= a_{t-1}    (half the elements)
    recurse on the odd positions, which now form a scan of half the length
    down:  u_t += a_t * u_{t-1} for the even positions t >= 2        (half the elements)

Each level is one or two fused tensor ops on half of the current length, so the whole scan costs
about three elementwise passes over the data and log2(L) Python iterations. It only multiplies
decays in (0, 1] and adds, so tiny `a` underflows to an exact reset rather than overflowing.

`linear_scan` runs this scan over blocks of DEFAULT_CHUNK steps (a Python loop over L/T blocks,
so that each block is scanned while it is in cache), carrying the state from block to block.
Its custom backward runs the mirrored scan for the adjoint g_t = dL/dh_t + a_{t+1} g_{t+1}, then
dL/db_t = g_t and dL/da_t = g_t h_{t-1}; it keeps a and h, nothing else.

On the CPU (fp32, fp64) `linear_scan` runs a compiled kernel instead (`trials.ops.native`):
the sequential recurrence, one pass over memory, vectorised over channels. On CUDA with
flash-linear-attention installed it runs that library's `fused_recurrent_hgrn`
(h_t = exp(g_t) h_{t-1} + x_t, so g = log a: see `_fla_scan`). `trials.ops.dispatch` holds
the rule.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trials.ops import dispatch, native
from trials.ops._precision import autocast_off, compute_dtype, full_precision

DEFAULT_CHUNK = 128  # time steps per in-cache block of `linear_scan`
FLA_HGRN = dispatch.Fused("fla.fused_recurrent_hgrn", "fla.ops.hgrn", "fused_recurrent_hgrn")
dispatch.register("linear_scan", native=True, fused=FLA_HGRN)


def scan_(a: Tensor, u: Tensor) -> None:
    """In place over dim 1: u_t <- a_t * u_{t-1} + u_t (u_{-1} = 0). `a` is clobbered.

    Both tensors must have the same shape, be writable and not alias each other.
    """
    length = u.shape[1]
    if length < 2:
        return
    u_odd, a_odd = u[:, 1::2], a[:, 1::2]
    u_odd.addcmul_(a_odd, u[:, 0 : length - 1 : 2])
    if length >= 4:  # the pair products are only read by a recursion of length >= 2
        a_odd.mul_(a[:, 0 : length - 1 : 2])
    scan_(a_odd, u_odd)
    if length > 2:
        u[:, 2::2].addcmul_(a[:, 2::2], u[:, 1 : length - 1 : 2])


def reverse_scan_(a: Tensor, u: Tensor) -> None:
    """In place over dim 1: u_t <- a_t * u_{t+1} + u_t (u_L = 0). `a` is clobbered, a_{L-1} unused.

    The mirror image of `scan_`, used for the adjoint (gradient) recurrence.
    """
    length = u.shape[1]
    if length < 2:
        return
    s = length % 2  # pair heads s, s+2, ..., L-2 absorb their right partner
    u_head, a_head = u[:, s::2], a[:, s::2]
    u_head.addcmul_(a_head, u[:, s + 1 :: 2])
    if length >= 4:
        a_head.mul_(a[:, s + 1 :: 2])
    reverse_scan_(a_head, u_head)
    if length > 2 or s == 1:
        u[:, 1 - s : length - 1 : 2].addcmul_(a[:, 1 - s : length - 1 : 2], u[:, 2 - s :: 2])


class _LinearScan(torch.autograd.Function):
    """a, b (B, L, ...) of one shape and dtype, h0 (B, ...) or None.

    Walks time in chunks so that each chunk's in-place scan runs in cache and every tensor
    crosses memory about once per pass; the carried state enters at each chunk's first step.
    """

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor | None, chunk: int) -> Tensor:
        h = torch.empty_like(b, memory_format=torch.contiguous_format)
        work = a.new_empty(a.shape[0], min(chunk, a.shape[1]), *a.shape[2:])
        last = h0
        for start in range(0, b.shape[1], chunk):
            end = min(start + chunk, b.shape[1])
            h_c, w = h[:, start:end], work[:, : end - start]
            h_c.copy_(b[:, start:end])
            w.copy_(a[:, start:end])
            if last is not None:
                h_c[:, 0].addcmul_(w[:, 0], last)
            scan_(w, h_c)
            last = h_c[:, -1]
        ctx.chunk = chunk
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        with autocast_off(grad_h.device):
            return _LinearScan._backward(ctx, grad_h)

    @staticmethod
    def _backward(ctx, grad_h: Tensor):
        a, h, h0 = ctx.saved_tensors
        length, chunk = h.shape[1], ctx.chunk
        grad_a, grad_b = torch.empty_like(h), torch.empty_like(h)
        work = a.new_empty(a.shape[0], min(chunk, length), *a.shape[2:])
        # Adjoint: g_t = dL/dh_t (total) = grad_h_t + a_{t+1} * g_{t+1}, walked backwards.
        for start in reversed(range(0, length, chunk)):
            end = min(start + chunk, length)
            g = grad_b[:, start:end]
            g.copy_(grad_h[:, start:end])
            if end < length:
                g[:, -1].addcmul_(a[:, end], grad_b[:, end])
            if end - start > 1:
                g[:, -2].addcmul_(a[:, end - 1], g[:, -1])
                w = work[:, : end - start - 1]
                w.copy_(a[:, start + 1 : end])
                reverse_scan_(w, g[:, :-1])
            # dL/da_t = g_t * h_{t-1}
            torch.mul(g[:, 1:], h[:, start : end - 1], out=grad_a[:, start + 1 : end])
            previous = h0 if start == 0 else h[:, start - 1]
            if previous is None:
                grad_a[:, 0] = 0
            else:
                torch.mul(g[:, 0], previous, out=grad_a[:, start])
        grad_h0 = None if h0 is None or not ctx.needs_input_grad[2] else a[:, 0] * grad_b[:, 0]
        return grad_a, grad_b, grad_h0, None


class _NativeLinearScan(torch.autograd.Function):
    """`_LinearScan`'s contract on the compiled CPU kernel (`native`): one pass over time per
    sequence, vectorised over channels; a, b (B, L, C) contiguous, h0 (B, C) or None."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor | None, chunk: int) -> Tensor:
        batch, length = b.shape[:2]
        h = torch.empty_like(b)
        kernel = native.entry("linear_scan_fwd", b)
        kernel(*map(native.pointer, (a, b, h0, h)), batch, length, b[0, 0].numel(),
               torch.get_num_threads())
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h, h0 = ctx.saved_tensors
        batch, length = h.shape[:2]
        grad_a, grad_b = torch.empty_like(h), torch.empty_like(h)
        want_h0 = h0 is not None and ctx.needs_input_grad[2]
        grad_h0 = torch.empty_like(h0) if want_h0 else None
        kernel = native.entry("linear_scan_bwd", h)
        grad_h = grad_h.contiguous()  # held here: the kernel reads it after map() lets go
        kernel(*map(native.pointer, (a, h, h0, grad_h, grad_a, grad_b, grad_h0)),
               batch, length, h[0, 0].numel(), torch.get_num_threads())
        return grad_a, grad_b, grad_h0, None


def _fla_scan(a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    """All states from flash-linear-attention's `fused_recurrent_hgrn(x, g, h0)`, which takes
    the decay as its natural log (h_t = exp(g_t) h_{t-1} + x_t) and channels flattened to
    (B, L, C). Its recurrent form is used, not `chunk_hgrn`, because only it sends gradients to
    h0. A decay that is exactly 0 is taken as the smallest normal float (log 0 = -inf would
    give 0 * inf = nan in the backward pass): a relative change of 1e-38, and the gradient it
    loses is that of a decay which has underflowed, zero for RG-LRU's exp(log a).
    """
    batch, length = b.shape[:2]
    log_a = torch.log(a.clamp_min(torch.finfo(a.dtype).tiny)).reshape(batch, length, -1)
    initial = None if h0 is None else h0.reshape(batch, -1)
    h, _ = dispatch.fused_function(FLA_HGRN)(b.reshape(batch, length, -1), log_a, initial)
    return h.view(b.shape)


@full_precision
def linear_scan(
    a: Tensor, b: Tensor, h0: Tensor | None = None, return_state: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """All states of h_t = a_t * h_{t-1} + b_t (h_{-1} = h0, or zero).

    a: decays broadcastable to b's shape, in [0, 1] (the fused CUDA path takes their log, so a
    negative decay is outside its domain); b: (B, L, C...) inputs;
    h0: (B, C...) initial state. Returns h (B, L, C...) in b's dtype and, with
    `return_state`, also the final state h_{L-1} (B, C...). Computed in fp32 (fp64 kept).
    """
    dtype = compute_dtype(a, b, h0)
    b_c = b.to(dtype)
    a_c = a.to(dtype).expand(b_c.shape)
    h0_c = None if h0 is None else h0.to(dtype).expand(b_c[:, 0].shape)
    kernel = dispatch.kernel_for("linear_scan", b_c)
    if kernel == dispatch.NATIVE:
        a_c, b_c = a_c.contiguous(), b_c.contiguous()
        h0_c = None if h0_c is None else h0_c.contiguous()
        h = _NativeLinearScan.apply(a_c, b_c, h0_c, DEFAULT_CHUNK).to(b.dtype)
    elif kernel == FLA_HGRN.name:
        h = _fla_scan(a_c, b_c, h0_c).to(b.dtype)
    else:
        h = _LinearScan.apply(a_c, b_c, h0_c, DEFAULT_CHUNK).to(b.dtype)
    if return_state:
        return h, h[:, -1]
    return h


@full_precision
def naive_linear_scan(
    a: Tensor, b: Tensor, h0: Tensor | None = None, return_state: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential reference for `linear_scan` (a Python loop over time)."""
    dtype = compute_dtype(a, b, h0)
    a_c, b_c = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
    h = b_c.new_zeros(b_c[:, 0].shape) if h0 is None else h0.to(dtype)
    states = []
    for a_t, b_t in zip(a_c.unbind(1), b_c.unbind(1)):  # unbind: backward stays O(L)
        h = a_t * h + b_t
        states.append(h)
    y = torch.stack(states, dim=1).to(b.dtype)
    if return_state:
        return y, y[:, -1]
    return y
