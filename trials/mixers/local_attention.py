"""Sliding-window causal attention (L): query t sees keys t-w+1 .. t (w = window, itself included).

Same projections, RoPE and GQA as global attention (it is an `Attention` whose forward and
decoding state differ). Shape legend: B batch, N length, H query heads, KV key/value heads,
hd head dim, w window.

Parallel form: `trials.ops.attention.causal_attention` with the window, which reads only the
w keys of each query (the native CPU kernel skips the rest; the PyTorch path attends blocks of
w queries to their 2w candidate keys under one banded mask): O(N w) work and memory. When
N <= w every key is inside the window and it is plain causal attention.

Decoding keeps a ring buffer of min(max_len, w) keys and values, already rotated at their true
position; token t overwrites slot t mod w, which held token t-w, the one leaving the window.
Softmax does not care about the order of the keys, so the ring is never re-sorted.
"""

from __future__ import annotations

from torch import Tensor

from trials.mixers.attention import Attention
from trials.mixers.base import State
from trials.ops.attention import causal_attention


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
        return self.output(causal_attention(q, k, v, self.window))

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
