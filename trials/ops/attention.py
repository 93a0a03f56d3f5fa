"""Causal softmax attention, global or within a sliding window, with grouped KV heads.

Shape legend: B batch, H query heads, KV key/value heads (H a multiple of KV, query head h
reading KV head h // (H / KV)), N positions, hd head dim, w window.

    o_i = sum_j softmax_j(q_i . k_j / sqrt(hd)) v_j   over keys j in [lo(i), i],
    lo(i) = 0 (global) or i - w + 1 (window: w keys, the query's own included)

`causal_attention(q, k, v, window)` is the op the attention mixers call. On the CPU in fp32
or fp64 at head dims 8, 16 and 32, and 64 up to 256 positions, the compiled kernel
(`trials.ops.native`) runs it: one (batch, KV head) slice per thread, keys and values held in
cache while every query head of the group walks them, a query's scores only over its own keys
(keys after a block of queries or before its window are never computed), an online softmax
over chunks of keys whose log-sum-exp is kept, so that the backward pass recomputes the
probabilities instead of storing (N, N) of them. It takes the projections' transposed layout
as it is and writes the output and the gradients in it, so neither side copies. Per layer,
forward and backward, at head dim 16 it runs 1.2-1.4x faster than SDPA's flash kernel, and
1.9-2.5x faster than the banded form with a window of 64 (benchmarks/README.md).

Everything else runs the PyTorch path: `attend` (SDPA, `is_causal`) for global attention, and
for a window shorter than the sequence `banded_attention`, SDPA over blocks of w queries
against their 2w candidate keys under one banded mask (O(N w) memory). That covers CUDA,
bf16, autocast, other head dims, head dim 64 past 256 positions (where SDPA is as fast) and
`HNAS_KERNELS=pytorch`; the trial records which ran.
`naive_causal_attention` (SDPA under an explicit (N, N) mask, KV heads repeated) is the
reference both paths are tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trials.ops import dispatch, native

dispatch.register("attention", native=True)

NATIVE_HEAD_DIMS = (8, 16, 32, 64)  # the head dims the kernel is compiled for
# Longest sequence at which the kernel beats SDPA, by head dim (absent: any length). Head dim
# 64 measured 1.09x SDPA at N = 64, 1.02x at 256 and 0.94x at 1024 (benchmarks/README.md,
# `attention_core.py`): past 256 it runs SDPA.
NATIVE_MAX_LENGTH = {64: 256}

# `enable_gqa` arrived in torch 2.5; older versions get the KV heads repeated (same numbers,
# more memory).
_SDPA_HAS_GQA = torch.__version__ >= "2.5"


def attend(q: Tensor, k: Tensor, v: Tensor, causal: bool, mask: Tensor | None = None) -> Tensor:
    """Scaled dot-product attention (SDPA) with grouped KV heads.

    q: (..., H, Nq, hd), k and v: (..., KV, Nk, hd) -> (..., H, Nq, hd). Query head h reads KV
    head h // (H / KV). `mask` (bool, True = may attend) broadcasts to (..., H, Nq, Nk).
    Keys and values are cast to the queries' dtype (a bf16 cache read by an fp32 model).
    """
    k, v = k.to(q.dtype), v.to(q.dtype)
    group = q.shape[-3] // k.shape[-3]
    extra = {}
    if group > 1 and _SDPA_HAS_GQA:
        extra["enable_gqa"] = True
    elif group > 1:
        k, v = k.repeat_interleave(group, dim=-3), v.repeat_interleave(group, dim=-3)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, **extra)


def band_mask(n_blocks: int, window: int, device: torch.device) -> Tensor:
    """(nb, 1, w, 2w) bool: query a of block i may read column c of [block i-1 | block i]."""
    a = torch.arange(window, device=device)[:, None]
    c = torch.arange(2 * window, device=device)[None, :]
    distance = window + a - c  # query position minus key position
    mask = ((distance >= 0) & (distance < window)).expand(n_blocks, window, 2 * window).clone()
    mask[0, :, :window] = False  # block 0 has no previous block: those keys are padding
    return mask[:, None]


def banded_attention(q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
    """The PyTorch path of windowed attention, for N > w: q (B, H, N, hd), k and v
    (B, KV, N, hd) -> (B, H, N, hd).

    The sequence is cut into nb = ceil(N / w) blocks of w positions; the keys a query of block
    i may see all lie in block i-1 or block i, so each query block attends to those 2w keys
    under one banded mask (block 0's previous block is zero padding, masked out):

        keys:      [ block i-1 | block i ]
        query a:    .  .  a+1 ... a+w  .      allowed key columns c: 0 <= (w + a) - c < w
    """
    B, H, N, hd = q.shape
    KV = k.shape[1]
    w = window
    nb = -(-N // w)
    tail = nb * w - N
    # queries: pad the end to whole blocks; (B, H, nb*w, hd) -> (B*nb, H, w, hd)
    qb = F.pad(q, (0, 0, 0, tail)).view(B, H, nb, w, hd).transpose(1, 2).reshape(B * nb, H, w, hd)

    def key_blocks(t: Tensor) -> Tensor:
        # one block of padding in front, whole blocks behind: (B, KV, (nb+1)*w, hd)
        blocks = F.pad(t, (0, 0, w, tail)).view(B, KV, nb + 1, w, hd)
        pairs = torch.cat((blocks[:, :, :-1], blocks[:, :, 1:]), dim=3)  # (B, KV, nb, 2w, hd)
        return pairs.transpose(1, 2).reshape(B * nb, KV, 2 * w, hd)

    mask = band_mask(nb, w, q.device).repeat(B, 1, 1, 1)  # (B*nb, 1, w, 2w)
    o = attend(qb, key_blocks(k), key_blocks(v), causal=False, mask=mask)  # (B*nb, H, w, hd)
    o = o.view(B, nb, H, w, hd).transpose(1, 2).reshape(B, H, nb * w, hd)
    return o[:, :, :N]


def _rows(t: Tensor) -> Tensor:
    """t itself when its last dim is contiguous (the kernels take any other strides), else a
    contiguous copy, which the caller holds while the kernel runs."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _heads_last(like: Tensor, heads: int) -> Tensor:
    """An empty (B, heads, N, hd) tensor laid out as (B, N, heads, hd), the projections'
    layout: the output projection reads it without a copy."""
    B, _, N, hd = like.shape
    return like.new_empty(B, N, heads, hd).transpose(1, 2)


def _strides(*tensors: Tensor) -> Tensor:
    """The (batch, head, position) strides of each (B, heads, N, hd) tensor, in order."""
    return torch.tensor([s for t in tensors for s in t.stride()[:3]], dtype=torch.int64)


def _call(name: str, like: Tensor, tensors: tuple, sizes: tuple, window: int,
          scale: float) -> None:
    layout = _strides(*(t for t in tensors if t.dim() == 4))  # held until the call returns
    status = native.entry(name, like)(*map(native.pointer, tensors), native.pointer(layout),
                                      *sizes, window, scale, torch.get_num_threads())
    if status:
        raise RuntimeError(f"hnas_{name}: no kernel for head_dim={like.shape[-1]}")


class _NativeAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
        B, H, N, hd = q.shape
        sizes = (B, H, k.shape[1], N, hd)
        o, lse = _heads_last(q, H), q.new_empty(B, H, N)
        _call("attention_fwd", q, (q, k, v, o, lse), sizes, window, hd ** -0.5)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.window = window
        return o

    @staticmethod
    def backward(ctx, grad_o: Tensor):
        q, k, v, o, lse = ctx.saved_tensors
        B, H, N, hd = q.shape
        KV = k.shape[1]
        grad_o = _rows(grad_o)  # held here: the kernel reads it
        grad_q, grad_k, grad_v = _heads_last(q, H), _heads_last(k, KV), _heads_last(v, KV)
        # the strides go in the order q, k, v, o, dO, dQ, dK, dV; lse is (B, H, N) contiguous
        tensors = (q, k, v, o, grad_o, lse, grad_q, grad_k, grad_v)
        _call("attention_bwd", q, tensors, (B, H, KV, N, hd), ctx.window, hd ** -0.5)
        return grad_q, grad_k, grad_v, None


def causal_attention(q: Tensor, k: Tensor, v: Tensor, window: int | None = None) -> Tensor:
    """q (B, H, N, hd), k and v (B, KV, N, hd) -> (B, H, N, hd): each query reads the keys at
    its position and before, the last `window` of them only when a window is given."""
    if window is not None and window < 1:
        raise ValueError(f"window={window} must be at least 1")
    k, v = k.to(q.dtype), v.to(q.dtype)
    B, H, N, hd = q.shape
    windowed = window is not None and window < N
    fits = (q.dtype in (torch.float32, torch.float64) and hd in NATIVE_HEAD_DIMS
            and N <= NATIVE_MAX_LENGTH.get(hd, N) and k.shape[-2] == N
            and H % k.shape[1] == 0 and not torch.is_autocast_enabled(q.device.type))
    if dispatch.kernel_for("attention", q, native_fits=fits) == dispatch.NATIVE:
        return _NativeAttention.apply(_rows(q), _rows(k), _rows(v), window if windowed else 0)
    if windowed:
        return banded_attention(q, k, v, window)
    return attend(q, k, v, causal=True)


def naive_causal_attention(q: Tensor, k: Tensor, v: Tensor, window: int | None = None) -> Tensor:
    """The reference: SDPA under an explicit (N, N) mask, KV heads repeated to H."""
    N = q.shape[-2]
    group = q.shape[1] // k.shape[1]
    distance = torch.arange(N)[:, None] - torch.arange(N)[None, :]  # query minus key position
    mask = (distance >= 0) & (distance < (N if window is None else window))
    k, v = (t.to(q.dtype).repeat_interleave(group, dim=1) for t in (k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.device))
