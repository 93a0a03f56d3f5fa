"""Sliding-window causal attention (L): query t sees keys t-w+1 .. t (w = window, itself included).

Same projections, RoPE and GQA as global attention (it is an `Attention` whose forward and
decoding state differ). Shape legend: B batch, N length, H query heads, KV key/value heads,
hd head dim, w window, nb = ceil(N / w) blocks.

Parallel form, linear in N: cut the sequence into blocks of w positions. The keys a query of
block i may see all lie in block i-1 or block i, so every query block attends to those 2w keys
under one banded mask,

    keys:      [ block i-1 | block i ]
    query a:    .  .  a+1 ... a+w  .      allowed key columns c: 0 <= (w + a) - c < w

and block 0's "previous block" is zero padding, masked out. Memory and compute are
O(N * 2w) rather than O(N^2). When N <= w every key is inside the window and the form is plain
causal attention (the one rule that picks between the two, by length alone).

Decoding keeps a ring buffer of min(max_len, w) keys and values, already rotated at their true
position; token t overwrites slot t mod w, which held token t-w, the one leaving the window.
Softmax does not care about the order of the keys, so the ring is never re-sorted.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from trials.mixers.attention import Attention, attend
from trials.mixers.base import State


def band_mask(n_blocks: int, window: int, device: torch.device) -> Tensor:
    """(nb, 1, w, 2w) bool: query a of block i may read column c of [block i-1 | block i]."""
    a = torch.arange(window, device=device)[:, None]
    c = torch.arange(2 * window, device=device)[None, :]
    distance = window + a - c  # query position minus key position
    mask = ((distance >= 0) & (distance < window)).expand(n_blocks, window, 2 * window).clone()
    mask[0, :, :window] = False  # block 0 has no previous block: those keys are padding
    return mask[:, None]


def windowed_attention(q: Tensor, k: Tensor, v: Tensor, window: int) -> Tensor:
    """q (B, H, N, hd), k and v (B, KV, N, hd) -> (B, H, N, hd), each query reading only the
    `window` most recent keys (itself included), in O(N * window) memory."""
    B, H, N, hd = q.shape
    KV = k.shape[1]
    if N <= window:
        return attend(q, k, v, causal=True)
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


class LocalAttention(Attention):
    """The L mixer: `Attention` restricted to a causal window of `window` tokens."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, rope_theta: float,
                 window: int, **options) -> None:
        """`options`: Attention's rope_fraction, qkv_bias, out_bias."""
        if window < 1:
            raise ValueError(f"window={window} must be at least 1")
        super().__init__(d_model, n_heads, n_kv_heads, rope_theta, **options)
        self.window = window

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.project(x, 0)
        return self.output(windowed_attention(q, k, v, self.window))

    def init_state(self, batch: int, max_len: int, device=None, dtype=None) -> State:
        """A ring of min(max_len, window) keys and values per sequence."""
        return self.empty_cache(batch, min(max_len, self.window), device, dtype)

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        pos, size = state["pos"], state["k"].shape[2]
        if pos >= size and size < self.window:
            # a ring shorter than the window (max_len < window) may not wrap: it would drop
            # keys that are still inside the window
            raise ValueError(f"decoding position {pos} is past the cache of max_len={size}")
        return self.decode(x_t, state, slot=pos % size, n_keys=min(pos + 1, size))
