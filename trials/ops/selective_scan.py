"""Mamba-1 selective scan: a diagonal state space model whose decay and input depend on time.

Shape legend: B batch, L length, D channels (d_inner), N state size, T chunk length.

    h_t = exp(dt_t * A) * h_{t-1} + (dt_t * x_t)[:, None] * B_t      h: (D, N) per sequence
    y_t = <h_t, C_t> + D * x_t,   then y_t * silu(z_t) when a gate z is given

Fast path (`selective_scan`): a custom autograd function that walks the sequence in chunks of T
steps (a Python loop over L/T chunks, never over steps):

    per chunk:  a = exp(dt * A), u = B (dt * x)          (B, T, N, D), decays all in [0, 1]
                u_0 += a_0 * h_entry                      the state carried in from the left
                h = scan(a, u) over the T axis            in place, work-efficient, log2(T) levels
                y = sum_n C * h                           one batched matmul

Only the state entering each chunk is kept, so memory is O(B*L*D + (L/T)*B*N*D) rather than
the O(B*L*N*D) of materialising every state (as `mambapy` does), and the chunk's working set
stays in cache. The backward pass walks the chunks in reverse: it recomputes the chunk's
states from its entry state, runs the adjoint recurrence g_t = C_t gy_t + a_{t+1} g_{t+1} with
the mirrored scan, and contracts. Nothing positive is ever exponentiated, so large dt*|A| and
long sequences stay finite: decays underflow to zero, which is the correct limit.

On the CPU (fp32, fp64) a compiled kernel (`trials.ops.native`) runs instead: the same chunked
recomputation, with each sequence's state held in cache. On CUDA with mamba_ssm installed, its
fused `selective_scan_fn` runs (`_mamba_ssm_scan`, which passes the initial and final states
through the scan as extra steps). Which one runs is `trials.ops.dispatch`'s rule; the tensor
path above stays the fallback.

`selective_scan_step` is one decoding step as plain tensor ops (no chunking, no autograd
Function); `naive_selective_scan` is the step-by-step reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trials.ops import dispatch, native
from trials.ops._precision import autocast_off, compute_dtype, full_precision, upcast
from trials.ops.scan import reverse_scan_, scan_

DEFAULT_CHUNK = 32
LOG2_E = 1.4426950408889634  # 1 / ln 2
MAMBA_SSM = dispatch.Fused("mamba_ssm", "mamba_ssm.ops.selective_scan_interface",
                           "selective_scan_fn")
dispatch.register("selective_scan", native=True, fused=MAMBA_SSM)


class _SelectiveScan(torch.autograd.Function):
    """x, dt (B, L, D), A (D, N), B, C (B, L, N), h0 (B, D, N) or None; one float dtype, contiguous.

    Returns (y without the D skip, final state (B, D, N)). Inside, a chunk's states are laid out
    (B, T, N, D) so that every contraction reduces over a middle or the contiguous last axis.
    """

    @staticmethod
    def forward(ctx, x, dt, A, B, C, h0, chunk: int):
        batch, length, channels = x.shape
        d_state = A.shape[1]
        A2_t = A.t() * LOG2_E  # (N, D): exp(dt*A) = exp2(dt*A2), and exp2 is the cheaper kernel
        y = x.new_empty(batch, length, channels)
        entry = x.new_empty(batch, -(-length // chunk), d_state, channels)  # state entering chunks
        last = x.new_zeros(batch, d_state, channels) if h0 is None else h0.transpose(1, 2)
        bufs = _Buffers(x, d_state, 2)
        for i, (start, end) in enumerate(_chunks(length, chunk)):
            entry[:, i] = last  # copied before the buffers are overwritten
            a, h = bufs.get(end - start)  # (B, T, N, D)
            _decays(dt[:, start:end], A2_t, out=a)
            _inputs(x[:, start:end], dt[:, start:end], B[:, start:end], out=h)
            h[:, 0].addcmul_(a[:, 0], entry[:, i])
            scan_(a, h)
            y[:, start:end] = _contract_state(h, C[:, start:end])
            last = h[:, -1]
        final = last.transpose(1, 2).clone()
        ctx.chunk, ctx.device = chunk, x.device
        ctx.has_h0 = h0 is not None
        ctx.save_for_backward(x, dt, A, B, C, entry)
        return y, final

    @staticmethod
    def backward(ctx, grad_y, grad_final):
        with autocast_off(ctx.device):
            return _SelectiveScan._backward(ctx, grad_y, grad_final)

    @staticmethod
    def _backward(ctx, grad_y, grad_final):
        x, dt, A, B, C, entry = ctx.saved_tensors
        batch, length, channels = x.shape
        d_state = A.shape[1]
        A_t = A.t().contiguous()  # (N, D)
        A2_t = A_t * LOG2_E
        grad_x, grad_dt = torch.empty_like(x), torch.empty_like(dt)
        grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
        grad_A_t = torch.zeros_like(A_t)
        # carry = dL/dh at the last step of the current chunk, from the steps after it.
        carry = x.new_zeros(batch, d_state, channels)
        if grad_final is not None:
            carry += grad_final.transpose(1, 2)
        if grad_y is None:
            grad_y = torch.zeros_like(x)
        bufs = _Buffers(x, d_state, 4)
        for i, (start, end) in reversed(list(enumerate(_chunks(length, ctx.chunk)))):
            a, work, h, g = bufs.get(end - start)  # (B, T, N, D)
            dt_c, x_c, B_c, C_c, gy_c = (v[:, start:end] for v in (dt, x, B, C, grad_y))
            # Recompute the chunk's states h from its entry state.
            _decays(dt_c, A2_t, out=a)
            _inputs(x_c, dt_c, B_c, out=h)
            work.copy_(a)
            h[:, 0].addcmul_(a[:, 0], entry[:, i])
            scan_(work, h)
            grad_C[:, start:end] = torch.mul(h, gy_c[:, :, None, :], out=work).sum(-1)
            # work <- a_t * h_{t-1}, so that dL/d(dt_t * A) = g_t * a_t * h_{t-1}.
            torch.mul(a[:, 1:], h[:, :-1], out=work[:, 1:])
            torch.mul(a[:, 0], entry[:, i], out=work[:, 0])
            # Adjoint: g_t = C_t gy_t + a_{t+1} * g_{t+1}; the carry enters at the chunk's end.
            torch.mul(C_c[..., None], gy_c[:, :, None, :], out=g)
            g[:, -1] += carry
            if end - start > 1:
                g[:, -2].addcmul_(a[:, -1], g[:, -1])
                reverse_scan_(a[:, 1:], g[:, :-1])  # clobbers a[:, 1:], no longer needed
            carry = a[:, 0] * g[:, 0]
            gdA = work.mul_(g)
            grad_A_t += torch.mul(gdA, dt_c[:, :, None, :], out=h).sum((0, 1))
            grad_dt_c = torch.mul(gdA, A_t, out=h).sum(2)  # (B, T, D)
            # u = B outer (dt * x)
            gw = _contract_state(g, B_c)  # (B, T, D)
            grad_B[:, start:end] = torch.mul(g, (dt_c * x_c)[:, :, None, :], out=h).sum(-1)
            grad_dt[:, start:end] = grad_dt_c.addcmul_(gw, x_c)
            grad_x[:, start:end] = gw.mul_(dt_c)
        grad_h0 = carry.transpose(1, 2) if ctx.has_h0 else None
        return grad_x, grad_dt, grad_A_t.t().contiguous(), grad_B, grad_C, grad_h0, None


class _NativeSelectiveScan(torch.autograd.Function):
    """`_SelectiveScan`'s contract plus the skip and gate, run by the compiled CPU kernel
    (`native`): each sequence is walked step by step with its (N, D) state in cache, and the
    output (y + D x) * silu(z) is formed in the same pass. The backward pass recomputes each
    chunk's states from the entry states kept here, as the tensor path does. D (D,) and z
    (B, L, D) may be None; returns (output, final state (B, D, N))."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, h0, chunk: int):
        batch, length, channels = x.shape
        d_state = A.shape[1]
        A_t = A.t().contiguous()  # (N, D)
        h0_t = None if h0 is None else h0.transpose(1, 2).contiguous()  # (B, N, D)
        y = torch.empty_like(x)  # y + D x
        out = torch.empty_like(x) if z is not None else None  # gated
        final = x.new_empty(batch, d_state, channels)
        entry = x.new_empty(batch, -(-length // chunk), d_state, channels)
        native.entry("selective_scan_fwd", x)(
            *map(native.pointer, (x, dt, A_t, B, C, D, z, h0_t, y, out, final, entry)),
            batch, length, channels, d_state, chunk, torch.get_num_threads())
        ctx.chunk, ctx.has_h0 = chunk, h0 is not None
        ctx.save_for_backward(x, dt, A_t, B, C, D, z, y if z is not None else None, entry)
        return (y if out is None else out), final.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad_out, grad_final):
        x, dt, A_t, B, C, D, z, y, entry = ctx.saved_tensors
        batch, length, channels = x.shape
        d_state = A_t.shape[0]
        grad_out = torch.zeros_like(x) if grad_out is None else grad_out.contiguous()
        if grad_final is not None:
            grad_final = grad_final.transpose(1, 2).contiguous()  # (B, N, D)
        grad_x, grad_dt = torch.empty_like(x), torch.empty_like(dt)
        grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
        grad_A_parts = x.new_empty(batch, d_state, channels)
        grad_D_parts = x.new_empty(batch, channels) if D is not None else None
        grad_z = torch.empty_like(z) if z is not None else None
        grad_h0 = x.new_empty(batch, d_state, channels) if ctx.has_h0 else None
        native.entry("selective_scan_bwd", x)(
            *map(native.pointer, (x, dt, A_t, B, C, D, z, y, entry, grad_out, grad_final,
                                  grad_x, grad_dt, grad_A_parts, grad_B, grad_C, grad_D_parts,
                                  grad_z, grad_h0)),
            batch, length, channels, d_state, ctx.chunk, torch.get_num_threads())
        grad_A = grad_A_parts.sum(0).t()
        grad_D = None if grad_D_parts is None else grad_D_parts.sum(0)
        grad_h0 = None if grad_h0 is None else grad_h0.transpose(1, 2)
        return grad_x, grad_dt, grad_A, grad_B, grad_C, grad_D, grad_z, grad_h0, None


class _Buffers:
    """`count` reusable (B, T, N, D) work buffers, reallocated only for a shorter last chunk."""

    def __init__(self, like: Tensor, d_state: int, count: int):
        self.like, self.d_state, self.count = like, d_state, count
        self.length, self.bufs = -1, []

    def get(self, length: int) -> list[Tensor]:
        if length != self.length:
            batch, _, channels = self.like.shape
            shape = (batch, length, self.d_state, channels)
            self.bufs = [self.like.new_empty(shape) for _ in range(self.count)]
            self.length = length
        return self.bufs


def _chunks(length: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk, length)) for start in range(0, length, chunk)]


def _decays(dt: Tensor, A2_t: Tensor, out: Tensor) -> Tensor:
    """exp2(dt * A2) = exp(dt * A): (B, T, D) x (N, D) -> (B, T, N, D), in [0, 1] for A <= 0."""
    return torch.mul(dt[:, :, None, :], A2_t, out=out).exp2_()


def _inputs(x: Tensor, dt: Tensor, B: Tensor, out: Tensor) -> Tensor:
    """B outer (dt * x): (B, T, D), (B, T, N) -> (B, T, N, D)."""
    return torch.mul(B[..., None], (dt * x)[:, :, None, :], out=out)


def _contract_state(h: Tensor, C: Tensor) -> Tensor:
    """sum_n C[b, t, n] * h[b, t, n, :]: (B, T, N, D), (B, T, N) -> (B, T, D)."""
    batch, length, d_state, channels = h.shape
    rows = C.reshape(batch * length, 1, d_state)
    return torch.bmm(rows, h.view(batch * length, d_state, channels)).view(batch, length, channels)


READ_IN_DT = 2.0 ** -40  # dt of the read-in steps: exp(dt * A) rounds to exactly 1 in fp32


def _mamba_ssm_scan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None,
                    return_state: bool) -> tuple[Tensor, Tensor | None]:
    """y without the D skip (B, L, D), and the final state (B, D, N) when asked, from mamba_ssm's
    `selective_scan_fn(u, delta, A, B, C)`, which takes channels before time: u, delta (B, D, L),
    B, C (B, N, L); dt is passed as delta (already softplus'ed, no bias).

    That function neither takes an initial state nor sends a gradient through its last_state,
    so both go through the scan itself, as extra steps whose B or C is a unit vector e_n:

    - h0 enters in N read-in steps before the sequence: step n has B = e_n, x = h0[:, :, n] / dt
      and dt = 2^-40, so it adds exactly h0[:, :, n] to the state's column n (a power of two
      scales exactly) while exp(dt * A) rounds to 1 (the columns already read in stay put);
    - the final state leaves in N read-out steps after it: dt = 0 (decay 1, input 0) and
      C = e_n, whose outputs are the state's columns.

    Both carry their gradients through the library's own backward pass; their outputs are cut.
    """
    batch, length, _ = x.shape
    d_state = A.shape[1]
    eye = torch.eye(d_state, dtype=B.dtype, device=B.device).expand(batch, -1, -1)  # (B, N, N)
    if h0 is not None:
        x = torch.cat([h0.transpose(1, 2) / READ_IN_DT, x], dim=1)  # (B, N+L, D)
        dt = torch.cat([torch.full_like(h0.transpose(1, 2), READ_IN_DT), dt], dim=1)
        B, C = torch.cat([eye, B], dim=1), F.pad(C, (0, 0, d_state, 0))
    if return_state:
        x, dt, B = (F.pad(v, (0, 0, 0, d_state)) for v in (x, dt, B))
        C = torch.cat([C, eye], dim=1)
    scan = dispatch.fused_function(MAMBA_SSM)
    y = scan(x.transpose(1, 2), dt.transpose(1, 2), A, B.transpose(1, 2),
             C.transpose(1, 2)).transpose(1, 2)  # (B, [N +] L [+ N], D)
    y = y[:, 0 if h0 is None else d_state:]
    if not return_state:
        return y, None
    return y[:, :length], y[:, length:].transpose(1, 2)  # (B, D, N): column n at step L+n


def _finish(y: Tensor, x: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    if D is not None:
        y = y + D.to(y.dtype) * x
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y


@full_precision
def selective_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    h0: Tensor | None = None,
    return_state: bool = False,
    chunk_size: int = DEFAULT_CHUNK,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba-1 selective scan, chunked parallel form (see the module docstring).

    x, dt: (B, L, D) with dt > 0 (already softplus'ed); A: (D, N), negative; B, C: (B, L, N);
    D: (D,) skip; z: (B, L, D) gate, applied as y * silu(z); h0: (B, D, N) initial state.
    Returns y (B, L, D) in x's dtype and, with `return_state`, the final state (B, D, N) in
    x's dtype. Computes in fp32 (fp64 inputs stay fp64).
    """
    if chunk_size < 1:
        raise ValueError(f"selective_scan: chunk_size must be >= 1, got {chunk_size}")
    dtype = compute_dtype(x, dt, A, B, C, D, z, h0)
    x_c, dt_c, A_c, B_c, C_c, h0_c = (
        None if v is None else v.to(dtype).contiguous() for v in (x, dt, A, B, C, h0)
    )
    kernel = dispatch.kernel_for("selective_scan", x_c)
    if kernel == dispatch.NATIVE:
        D_c, z_c = (None if v is None else v.to(dtype).contiguous() for v in (D, z))
        y, final = _NativeSelectiveScan.apply(x_c, dt_c, A_c, B_c, C_c, D_c, z_c, h0_c,
                                              int(chunk_size))
    elif kernel == MAMBA_SSM.name:
        y, final = _mamba_ssm_scan(x_c, dt_c, A_c, B_c, C_c, h0_c, return_state)
        y = _finish(y, x_c, D, z)
    else:
        y, final = _SelectiveScan.apply(x_c, dt_c, A_c, B_c, C_c, h0_c, int(chunk_size))
        y = _finish(y, x_c, D, z)
    y = y.to(x.dtype)
    if return_state:
        return y, final.to(x.dtype)
    return y


@full_precision
def selective_scan_step(
    x_t: Tensor, dt_t: Tensor, A: Tensor, B_t: Tensor, C_t: Tensor, h: Tensor,
    D: Tensor | None = None, z_t: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """One decoding step of `selective_scan`, as plain tensor ops on the (B, D, N) state.

    x_t, dt_t, z_t: (B, D); A: (D, N); B_t, C_t: (B, N); h: (B, D, N). Returns (y_t (B, D) in
    x_t's dtype, the new state in h's dtype). The same maths as a one-token `selective_scan`
    from h, without its chunking, autograd Function or kernel call, which cost more than the
    arithmetic for one token.
    """
    dtype = compute_dtype(x_t, dt_t, A, B_t, C_t, h, D, z_t)
    x_c, dt_c, B_c, C_c = (v.to(dtype) for v in (x_t, dt_t, B_t, C_t))
    decay = torch.exp(dt_c[:, :, None] * A.to(dtype))  # (B, D, N)
    state = torch.addcmul(decay * h.to(dtype), (dt_c * x_c)[:, :, None], B_c[:, None, :])
    y = torch.bmm(state, C_c[:, :, None])[:, :, 0]  # (B, D)
    return _finish(y, x_c, D, z_t).to(x_t.dtype), state.to(h.dtype)


@full_precision
def naive_selective_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    h0: Tensor | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Step-by-step reference for `selective_scan` (a Python loop over time)."""
    dtype = compute_dtype(x, dt, A, B, C, D, z, h0)
    x_c, dt_c, A_c, B_c, C_c = (upcast(v, dtype) for v in (x, dt, A, B, C))
    batch, _, channels = x.shape
    h = x_c.new_zeros(batch, channels, A.shape[1]) if h0 is None else upcast(h0, dtype)
    ys = []
    for x_t, dt_t, B_t, C_t in zip(*(v.unbind(1) for v in (x_c, dt_c, B_c, C_c))):
        decay = torch.exp(dt_t[:, :, None] * A_c)  # (B, D, N)
        h = decay * h + (dt_t * x_t)[:, :, None] * B_t[:, None, :]
        ys.append((h * C_t[:, None, :]).sum(-1))
    y = _finish(torch.stack(ys, dim=1), x_c, D, z).to(x.dtype)
    if return_state:
        return y, h.to(x.dtype)
    return y
