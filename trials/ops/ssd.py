"""Mamba-2 state space duality (SSD): the chunked matrix form of a scalar-decay SSM.

Shape legend: B batch, L length, H heads, P head dim, G groups of B/C (H divisible by G,
head h reads group h // R with R = H/G heads per group), N state size, Q chunk length,
K = L/Q chunks.

Per head, with a scalar decay per step (this is what makes the matrix form possible):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        h: (P, N)
    y_t = h_t C_t + D * x_t

Fast path (`ssd`), batched tensor ops over all chunks at once:

    1. within each chunk, the masked "attention" form: Y_diag = (B C^T * decay)^T (dt * x),
       decay[s, t] = exp(sum_{s < r <= t} dt_r A) for s <= t                 (B, K, G, R, Q, Q)
    2. the state each chunk contributes at its end, one matmul per chunk and group
    3. those states carried across chunks (a loop over the K chunks on (B, G, N, R*P) states)
    4. each chunk reads the state entering it: Y_off = exp(cum dA) * C h_prev

Step 1 is one custom autograd function (`_WithinChunks`) and step 3 another (`_AcrossChunks`);
the rest is autograd over tensors no larger than x. The Q x Q tensors of step 1 dominate the
memory traffic, so they are laid out [s, t] (source, target), built in place, and only the
decay is kept for the backward pass (the scores are recomputed, one multiply).

Precision: the decay is the exponential of a *segment* sum, computed as a running sum over
the window (s, t] itself, never as the difference cs_t - cs_s of two cumulative sums: with
dt * |A| in the hundreds the cumulative sums reach 1e4 within a chunk and their difference
keeps only ~1e-3 of relative precision, while a segment sum is as precise as its own terms.
Nothing positive is ever exponentiated. The backward pass keeps the same property: the
gradient of the log decay at step r sums the decay gradients of exactly the windows that
contain r, never "all windows minus the others". Each chunk's decay to its end comes from a
suffix sum for the same reason.

On the CPU (fp32, fp64) a compiled kernel (`trials.ops.native`) runs instead: the recurrence
itself, step by step with each sequence's (H, P, N) state in cache, one exp per head and step,
checkpointing the state every `chunk_size` steps for its backward pass. On CUDA with
flash-linear-attention installed, its `chunk_simple_gla` runs (`_fla_ssd`): the SSD is gated
linear attention with one scalar gate per head and step. The matrix form above stays the
fallback; `trials.ops.dispatch` holds the rule.

Layouts: states are kept (N, R*P) per chunk and group, so that the chunk states (B^T (dt x))
and the reads (C h) are plain matmuls on x's natural (Q, R*P) layout without copies. A
length that is not a multiple of Q is zero-padded with dt = 0, which leaves the state
unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trials.ops import dispatch, native
from trials.ops._precision import autocast_off, compute_dtype, full_precision

FLA_SIMPLE_GLA = dispatch.Fused("fla.chunk_simple_gla", "fla.ops.simple_gla", "chunk_simple_gla")
dispatch.register("ssd", native=True, fused=FLA_SIMPLE_GLA)


def _strictly_after(length: int, like: Tensor) -> Tensor:
    """(Q, Q) float mask [s, t] = 1 where t > s: the steps r in a window (s, t]."""
    return torch.ones(length, length, dtype=like.dtype, device=like.device).triu_(1)


class _WithinChunks(torch.autograd.Function):
    """The diagonal blocks: y[t] = sum_{s <= t} exp(sum_{s < r <= t} ld_r) * cbt[s, t] * u[s].

    ld: (..., R, Q) log decays (<= 0); cbt: (..., Q, Q) [s, t] = B_s . C_t, zero for s > t,
    shared by the R heads of a group; u: (..., R, Q, P) the inputs dt * x. Returns
    (..., R, Q, P). All contiguous, one float dtype.
    """

    @staticmethod
    def forward(ctx, ld: Tensor, cbt: Tensor, u: Tensor) -> Tensor:
        after = _strictly_after(ld.shape[-1], ld)
        # [s, t] = sum_{s < r <= t} ld_r as a running sum along t; 0 for t <= s, so the
        # entries below the diagonal are exp(0) = 1 and finite, and cbt zeroes them
        decay = (ld[..., None, :] * after).cumsum_(-1).exp_()  # (..., R, Q, Q)
        scores = decay * cbt.unsqueeze(-3)
        y = torch.matmul(scores.transpose(-1, -2), u)
        ctx.save_for_backward(cbt, u, decay)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        with autocast_off(grad_y.device):
            cbt, u, decay = ctx.saved_tensors
            grad_y = grad_y.contiguous()
            scores = decay * cbt.unsqueeze(-3)
            grad_u = torch.matmul(scores, grad_y)
            grad_scores = torch.matmul(u, grad_y.transpose(-1, -2))  # [s, t]
            grad_cbt = (grad_scores * decay).sum(-3)
            # m[s, t] = dL/d(segment sum of (s, t]); dL/d ld_t = sum_{s < t} sum_{t' >= t}
            # m[s, t'], the windows that contain t. The sum over t' >= t is a running sum from
            # the right, taken on the mirrored layout so that only wanted terms are added.
            m = grad_scores.mul_(scores)
            tail = m.flip(-1).cumsum_(-1)  # [s, j] = sum_{t' >= Q-1-j} m[s, t']
            after = _strictly_after(decay.shape[-1], decay)
            grad_ld = tail.mul_(after.flip(-1)).sum(-2).flip(-1)
            return grad_ld, grad_cbt, grad_u


class _AcrossChunks(torch.autograd.Function):
    """The state entering each chunk: before_0 = h0, before_{k+1} = e_k * before_k + s_k.

    e: (B, K, G, R) chunk decays; s: (B, K, G, N, R, P) chunk states; h0: (B, G, N, R, P) or
    None. Returns before (B, K, G, N, R, P) and the final state (B, G, N, R, P). A loop over
    the K chunks (L/Q of them), each step one fused op on a (B, G, N, R, P) state.
    """

    @staticmethod
    def forward(ctx, e: Tensor, s: Tensor, h0: Tensor | None):
        before = torch.empty_like(s)
        h = torch.zeros_like(s[:, 0]) if h0 is None else h0
        for k in range(s.shape[1]):
            before[:, k] = h
            h = torch.addcmul(s[:, k], e[:, k, :, None, :, None], h)
        ctx.save_for_backward(e, before)
        ctx.has_h0 = h0 is not None
        return before, h

    @staticmethod
    def backward(ctx, grad_before: Tensor | None, grad_final: Tensor | None):
        with autocast_off(ctx.saved_tensors[0].device):
            e, before = ctx.saved_tensors
            # g = dL/d(state after chunk k), walked from the last chunk back
            g = torch.zeros_like(before[:, 0]) if grad_final is None else grad_final.clone()
            grad_s, grad_e = torch.empty_like(before), torch.empty_like(e)
            for k in reversed(range(before.shape[1])):
                grad_s[:, k] = g
                grad_e[:, k] = (g * before[:, k]).sum((2, 4))
                decayed = g * e[:, k, :, None, :, None]
                g = decayed if grad_before is None else decayed.add_(grad_before[:, k])
            return grad_e, grad_s, (g if ctx.has_h0 else None)


class _NativeSSD(torch.autograd.Function):
    """The SSD's recurrence on the compiled CPU kernel (`native`): each sequence walked step by
    step with its (H, P, N) state in cache, one exp per head and step. Same inputs as `ssd`,
    contiguous, one float dtype; D and h0 may be None. Returns (y, final state (B, H, P, N)).
    The backward pass recomputes each chunk's states from the entry states kept here."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, h0, chunk: int):
        batch, length, heads, head_dim = x.shape
        groups, d_state = B.shape[2], B.shape[3]
        y = torch.empty_like(x)
        final = x.new_empty(batch, heads, head_dim, d_state)
        entry = x.new_empty(batch, -(-length // chunk), heads, head_dim, d_state)
        native.entry("ssd_fwd", x)(
            *map(native.pointer, (x, dt, A, B, C, D, h0, y, final, entry)),
            batch, length, heads, head_dim, groups, d_state, chunk, torch.get_num_threads())
        ctx.chunk, ctx.has_h0 = chunk, h0 is not None
        ctx.save_for_backward(x, dt, A, B, C, D, entry)
        return y, final

    @staticmethod
    def backward(ctx, grad_y, grad_final):
        x, dt, A, B, C, D, entry = ctx.saved_tensors
        batch, length, heads, head_dim = x.shape
        groups, d_state = B.shape[2], B.shape[3]
        grad_y = torch.zeros_like(x) if grad_y is None else grad_y.contiguous()
        grad_final = None if grad_final is None else grad_final.contiguous()
        grad_x, grad_dt = torch.empty_like(x), torch.empty_like(dt)
        grad_B, grad_C = torch.empty_like(B), torch.empty_like(C)
        grad_A_parts = x.new_empty(batch, heads)
        grad_D_parts = x.new_empty(batch, heads) if D is not None else None
        grad_h0 = x.new_empty(batch, heads, head_dim, d_state) if ctx.has_h0 else None
        native.entry("ssd_bwd", x)(
            *map(native.pointer, (x, dt, A, B, C, D, entry, grad_y, grad_final, grad_x, grad_dt,
                                  grad_A_parts, grad_B, grad_C, grad_D_parts, grad_h0)),
            batch, length, heads, head_dim, groups, d_state, ctx.chunk, torch.get_num_threads())
        grad_D = None if grad_D_parts is None else grad_D_parts.sum(0)
        return grad_x, grad_dt, grad_A_parts.sum(0), grad_B, grad_C, grad_D, grad_h0, None


def _fla_ssd(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None,
             return_state: bool) -> tuple[Tensor, Tensor | None]:
    """y without the D skip (B, L, H, P) and the final state (B, H, P, N) when asked, from
    flash-linear-attention's `chunk_simple_gla(q, k, v, g)`, whose state S (K x V per head) follows

        S_t = exp(g_t) S_{t-1} + k_t^T v_t,   o_t = scale * q_t S_t.

    With S = h^T (N x P): k = B and q = C (each group's row repeated for its R heads, head h
    reading group h // R), v = dt * x, g = dt * A (the natural-log decay; fla rescales it to
    base 2 itself), scale = 1. The states are (N, P) there, ours (P, N): transposed at the edge.
    """
    heads = x.shape[2]
    per_group = heads // B.shape[2]
    k, q = (v.repeat_interleave(per_group, dim=2) for v in (B, C))  # (B, L, H, N)
    initial = None if h0 is None else h0.transpose(-1, -2)  # (B, H, N, P)
    gla = dispatch.fused_function(FLA_SIMPLE_GLA)
    y, final = gla(q, k, x * dt[..., None], dt * A, scale=1.0, initial_state=initial,
                   output_final_state=return_state)
    return y, (final.transpose(-1, -2) if return_state else None)


@full_precision
def ssd(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    h0: Tensor | None = None,
    chunk_size: int = 64,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba-2 SSD, chunked matrix form (see the module docstring).

    x: (B, L, H, P); dt: (B, L, H), positive; A: (H,), negative; B, C: (B, L, G, N);
    D: (H,) skip; h0: (B, H, P, N) initial state; chunk_size: Q (the chunk is the whole sequence
    when L < Q). Returns y (B, L, H, P) in x's dtype and, with `return_state`, the final state
    (B, H, P, N) in x's dtype. Computes in fp32 (fp64 kept). `chunk_size` is this path's and
    the native kernel's; flash-linear-attention keeps its own (64).
    """
    if chunk_size < 1:
        raise ValueError(f"ssd: chunk_size must be >= 1, got {chunk_size}")
    batch, length, heads, head_dim = x.shape
    groups, d_state = B.shape[2], B.shape[3]
    R, P, N = heads // groups, head_dim, d_state
    q = min(chunk_size, length)  # a sequence shorter than one chunk is one chunk
    n_chunks = -(-length // q)
    pad = n_chunks * q - length

    dtype = compute_dtype(x, dt, A, B, C, D, h0)
    x_c = x.to(dtype)
    kernel = dispatch.kernel_for("ssd", x_c)
    if kernel == dispatch.NATIVE:
        y, final = _NativeSSD.apply(*(None if v is None else v.to(dtype).contiguous()
                                      for v in (x_c, dt, A, B, C, D, h0)), int(chunk_size))
        return (y.to(x.dtype), final.to(x.dtype)) if return_state else y.to(x.dtype)
    if kernel == FLA_SIMPLE_GLA.name:
        y, final = _fla_ssd(*(None if v is None else v.to(dtype)
                              for v in (x_c, dt, A, B, C, h0)), return_state)
        if D is not None:
            y = torch.addcmul(y, x_c, D.to(dtype)[:, None])
        return (y.to(x.dtype), final.to(x.dtype)) if return_state else y.to(x.dtype)
    xs, dts, Bs, Cs = (
        F.pad(v.to(dtype), (0, 0) * (v.dim() - 2) + (0, pad)) if pad else v.to(dtype)
        for v in (x_c, dt, B, C)
    )
    shape = (batch, n_chunks, q, groups)
    u = xs.view(*shape, R, P) * dts.view(*shape, R, 1)  # dt * x: (B, K, Q, G, R, P)
    Bg = Bs.view(*shape, N).transpose(2, 3)  # (B, K, G, Q, N)
    Cg = Cs.view(*shape, N).transpose(2, 3)
    # log decays, each head's chunk contiguous: (B, K, G, R, Q)
    ld = (dts.view(*shape, R) * A.to(dtype).view(groups, R)).permute(0, 1, 3, 4, 2).contiguous()

    # 1. within chunks
    cbt = torch.matmul(Bg, Cg.transpose(-1, -2)).triu_()  # (B, K, G, Q, Q) [s, t], s <= t
    u_heads = u.permute(0, 1, 3, 4, 2, 5).contiguous()  # (B, K, G, R, Q, P)
    y_diag = _WithinChunks.apply(ld, cbt, u_heads)  # (B, K, G, R, Q, P)
    # 2. what each chunk adds to the state at its end: decay from s to the end is a suffix sum
    to_end = F.pad(ld[..., 1:].flip(-1).cumsum(-1).flip(-1), (0, 1)).exp()  # (B, K, G, R, Q)
    weighted = u * to_end.permute(0, 1, 4, 2, 3)[..., None]  # (B, K, Q, G, R, P)
    chunk_states = torch.matmul(Bg.transpose(-1, -2),
                                weighted.view(*shape, R * P).transpose(2, 3))  # (B,K,G,N,R*P)
    # 3. carry the states across chunks
    cum = ld.cumsum(-1)  # (B, K, G, R, Q): log decay from the chunk's start to step t
    init = None
    if h0 is not None:
        init = h0.to(dtype).view(batch, groups, R, P, N).permute(0, 1, 4, 2, 3)  # (B,G,N,R,P)
    before, final = _AcrossChunks.apply(cum[..., -1].exp(), chunk_states.view(
        batch, n_chunks, groups, N, R, P), init)
    # 4. each chunk reads the state entering it, decayed to step t
    y_off = torch.matmul(Cg, before.view(batch, n_chunks, groups, N, R * P))  # (B,K,G,Q,R*P)
    y_off = y_off.view(batch, n_chunks, groups, q, R, P) * cum.exp().transpose(-1, -2)[..., None]

    y = y_off.transpose(2, 3) + y_diag.permute(0, 1, 4, 2, 3, 5)  # (B, K, Q, G, R, P)
    y = y.reshape(batch, n_chunks * q, heads, head_dim)[:, :length]
    if D is not None:
        y = torch.addcmul(y, x_c, D.to(dtype)[:, None])
    y = y.to(x.dtype)
    if return_state:
        state = final.permute(0, 1, 3, 4, 2).reshape(batch, heads, head_dim, d_state)
        return y, state.to(x.dtype)
    return y


@full_precision
def naive_ssd(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    h0: Tensor | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Step-by-step reference for `ssd` (a Python loop over time)."""
    batch, _, heads, head_dim = x.shape
    per_group = heads // B.shape[2]
    dtype = compute_dtype(x, dt, A, B, C, D, h0)
    x_c, dt_c, A_c = x.to(dtype), dt.to(dtype), A.to(dtype)
    Bh = B.to(dtype).repeat_interleave(per_group, dim=2)  # (B, L, H, N)
    Ch = C.to(dtype).repeat_interleave(per_group, dim=2)
    h = x_c.new_zeros(batch, heads, head_dim, B.shape[3]) if h0 is None else h0.to(dtype)
    ys = []
    for x_t, dt_t, B_t, C_t in zip(*(v.unbind(1) for v in (x_c, dt_c, Bh, Ch))):
        decay = torch.exp(dt_t * A_c)[:, :, None, None]  # (B, H, 1, 1)
        h = decay * h + (dt_t[:, :, None] * x_t)[..., None] * B_t[:, :, None, :]
        ys.append((h * C_t[:, :, None, :]).sum(-1))
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + x_c * D.to(dtype)[:, None]
    y = y.to(x.dtype)
    if return_state:
        return y, h.to(x.dtype)
    return y
