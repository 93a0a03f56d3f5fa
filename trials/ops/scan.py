"""Diagonal linear recurrence h_t = a_t * h_{t-1} + b_t, computed in parallel.

Used directly by the RG-LRU mixer and, over chunks, by the Mamba-2 SSD op. The in-place scan
kernels here are also the building block of `selective_scan`.

Shape legend: B batch, L length (time is always dim 1), C channels (any trailing dims).

The parallel algorithm is a work-efficient, in-place pairwise reduction (the up-sweep and
down-sweep of a Blelloch scan, written recursively over strided views of the time axis):

    up:    pair (t-1, t): u_t += a_t * u_{t-1};  a_t *= a_{t-1}    (half the elements)
    recurse on the odd positions, which now form a scan of half the length
    down:  u_t += a_t * u_{t-1} for the even positions t >= 2        (half the elements)

Each level is one or two fused tensor ops on half of the current length, so the whole scan costs
about three elementwise passes over the data and log2(L) Python iterations. It only multiplies
decays in (0, 1] and adds, so tiny `a` underflows to an exact reset rather than overflowing.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trials.ops._precision import compute_dtype


def scan_(a: Tensor, u: Tensor) -> None:
    """In place over dim 1: u_t <- a_t * u_{t-1} + u_t (u_{-1} = 0). `a` is clobbered.

    Both tensors must have the same shape, be writable and not alias each other.
    """
    length = u.shape[1]
    if length < 2:
        return
    u_odd, a_odd = u[:, 1::2], a[:, 1::2]
    u_odd.addcmul_(a_odd, u[:, 0 : length - 1 : 2])
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
    a_head.mul_(a[:, s + 1 :: 2])
    reverse_scan_(a_head, u_head)
    if length > 2 or s == 1:
        u[:, 1 - s : length - 1 : 2].addcmul_(a[:, 1 - s : length - 1 : 2], u[:, 2 - s :: 2])


class _LinearScan(torch.autograd.Function):
    """fp32, contiguous (B, L, ...) inputs of one shape; h0 (B, ...) or None."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
        h = b.clone(memory_format=torch.contiguous_format)
        work = a.clone(memory_format=torch.contiguous_format)
        if h0 is not None:
            h[:, 0].addcmul_(work[:, 0], h0)
        scan_(work, h)
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor):
        a, h, h0 = ctx.saved_tensors
        # Adjoint: g_t = dL/dh_t (total) = grad_h_t + a_{t+1} * g_{t+1}.
        g = grad_h.clone(memory_format=torch.contiguous_format)
        a_next = torch.empty_like(g)
        a_next[:, :-1] = a[:, 1:]
        a_next[:, -1] = 0
        reverse_scan_(a_next, g)
        grad_a = torch.empty_like(g)
        torch.mul(g[:, 1:], h[:, :-1], out=grad_a[:, 1:])
        if h0 is None:
            grad_a[:, 0] = 0
        else:
            torch.mul(g[:, 0], h0, out=grad_a[:, 0])
        grad_h0 = None if h0 is None or not ctx.needs_input_grad[2] else a[:, 0] * g[:, 0]
        return grad_a, g, grad_h0


def linear_scan(
    a: Tensor, b: Tensor, h0: Tensor | None = None, return_state: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """All states of h_t = a_t * h_{t-1} + b_t (h_{-1} = h0, or zero).

    a: decays broadcastable to b's shape (typically in (0, 1]); b: (B, L, C...) inputs;
    h0: (B, C...) initial state. Returns h (B, L, C...) in b's dtype and, with
    `return_state`, also the final state h_{L-1} (B, C...). Computed in fp32 (fp64 kept).
    """
    dtype = compute_dtype(a, b, h0)
    b_c = b.to(dtype)
    a_c = a.to(dtype).expand(b_c.shape)
    h0_c = None if h0 is None else h0.to(dtype).expand(b_c[:, 0].shape)
    h = _LinearScan.apply(a_c, b_c, h0_c).to(b.dtype)
    if return_state:
        return h, h[:, -1]
    return h


def naive_linear_scan(
    a: Tensor, b: Tensor, h0: Tensor | None = None, return_state: bool = False
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential reference for `linear_scan` (a Python loop over time)."""
    dtype = compute_dtype(a, b, h0)
    a_c, b_c = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
    h = b_c.new_zeros(b_c[:, 0].shape) if h0 is None else h0.to(dtype)
    states = []
    for t in range(b_c.shape[1]):
        h = a_c[:, t] * h + b_c[:, t]
        states.append(h)
    y = torch.stack(states, dim=1).to(b.dtype)
    if return_state:
        return y, y[:, -1]
    return y
