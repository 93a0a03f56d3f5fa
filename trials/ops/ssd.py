"""Mamba-2 state space duality (SSD): the chunked matrix form of a scalar-decay SSM.

Shape legend: B batch, L length, H heads, P head dim, G groups of B/C (H divisible by G,
head h reads group h // (H/G)), N state size, Q chunk length, K = L/Q chunks.

Per head, with a scalar decay per step (this is what makes the matrix form possible):

    h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t B_t^T        h: (P, N)
    y_t = h_t C_t + D * x_t

Fast path (`ssd`), all batched tensor ops and autograd:

    1. within each chunk, the masked "attention" form: Y_diag = (C B^T * decay) (dt * x),
       decay[t, s] = exp(sum_{s < r <= t} dt_r A), zero for s > t        (B, K, H, Q, Q)
    2. the state each chunk contributes at its end, by one contraction over the chunk
    3. those states carried across chunks by `linear_scan` (linear memory, parallel)
    4. each chunk reads the state entering it: Y_off = exp(cum dA) * C h_prev

The decay matrix is built from a masked cumulative sum of the log decays of each window
("segment sums") rather than the difference of two long cumulative sums, so it never
exponentiates a positive number and keeps full precision when dt * |A| is large. A length that
is not a multiple of Q is zero-padded with dt = 0, which leaves the state unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trials.ops._precision import compute_dtype, full_precision
from trials.ops.scan import linear_scan


def segment_sums(log_decay: Tensor) -> Tensor:
    """(..., Q) -> (..., Q, Q): [t, s] = sum_{s < r <= t} log_decay[r] for s <= t, -inf above."""
    length = log_decay.shape[-1]
    ones = torch.ones(length, length, dtype=torch.bool, device=log_decay.device)
    windows = log_decay[..., :, None].expand(*log_decay.shape, length)  # [r, s] = log_decay[r]
    windows = windows.masked_fill(~torch.tril(ones, diagonal=-1), 0.0)  # keep r > s
    sums = windows.cumsum(dim=-2)  # [t, s] = sum over s < r <= t
    return sums.masked_fill(~torch.tril(ones), float("-inf"))


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
    (B, H, P, N) in x's dtype. Computes in fp32 (fp64 kept).
    """
    if chunk_size < 1:
        raise ValueError(f"ssd: chunk_size must be >= 1, got {chunk_size}")
    batch, length, heads, head_dim = x.shape
    groups, d_state = B.shape[2], B.shape[3]
    per_group = heads // groups
    q = min(chunk_size, length)  # a sequence shorter than one chunk is one chunk
    n_chunks = -(-length // q)
    pad = n_chunks * q - length

    dtype = compute_dtype(x, dt, A, B, C, D, h0)
    x_c = x.to(dtype)
    xs, dts, Bs, Cs = (
        F.pad(v.to(dtype), (0, 0) * (v.dim() - 2) + (0, pad)) for v in (x_c, dt, B, C)
    )
    xs = xs.view(batch, n_chunks, q, groups, per_group, head_dim)
    dts = dts.view(batch, n_chunks, q, groups, per_group)
    Bs = Bs.view(batch, n_chunks, q, groups, d_state)
    Cs = Cs.view(batch, n_chunks, q, groups, d_state)

    log_decay = (dts * A.to(dtype).view(groups, per_group)).permute(0, 1, 3, 4, 2)  # (B,K,G,R,Q)
    decay = segment_sums(log_decay).exp()  # (B, K, G, R, Q, Q): [t, s] from s to t
    xdt = xs * dts[..., None]  # (B, K, Q, G, R, P)

    # 1. within chunks
    scores = torch.einsum("bktgn,bksgn->bkgts", Cs, Bs)[:, :, :, None] * decay
    y = torch.einsum("bkgrts,bksgrp->bktgrp", scores, xdt)
    # 2. what each chunk adds to the state at its end
    to_end = decay[..., -1, :]  # (B, K, G, R, Q)
    chunk_states = torch.einsum("bkgrs,bksgrp,bksgn->bkgrpn", to_end, xdt, Bs)
    # 3. carry states across chunks: state after chunk k = exp(sum of its dA) * before + own
    chunk_decay = log_decay.sum(-1).exp()[..., None, None]  # (B, K, G, R, 1, 1)
    init = None if h0 is None else h0.to(dtype).reshape(batch, groups, per_group, head_dim, d_state)
    after = linear_scan(chunk_decay, chunk_states, init)  # (B, K, G, R, P, N)
    first = torch.zeros_like(after[:, :1]) if init is None else init[:, None]
    before = torch.cat([first, after[:, :-1]], dim=1)
    # 4. each chunk reads the state entering it, decayed to step t
    from_start = (decay[..., :, 0] * log_decay[..., :1].exp()).permute(0, 1, 4, 2, 3)
    y = y + torch.einsum("bktgn,bkgrpn->bktgrp", Cs, before) * from_start[..., None]

    y = y.reshape(batch, n_chunks * q, heads, head_dim)[:, :length]
    if D is not None:
        y = y + x_c * D.to(dtype)[:, None]
    y = y.to(x.dtype)
    if return_state:
        return y, after[:, -1].reshape(batch, heads, head_dim, d_state).to(x.dtype)
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
