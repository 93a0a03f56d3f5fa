"""Global causal attention (A): multi-head, grouped KV heads (GQA), rotary positions.

Shape legend: B batch, N length, H query heads, KV key/value heads (H a multiple of KV),
hd head dim, d_in / d_out the widths read and written.

    x ─┬─ q_proj ─ RoPE ─┐
       ├─ k_proj ─ RoPE ─┼─ softmax(q k^T / sqrt(hd), causal) v ─ o_proj ─> y
       └─ v_proj ────────┘

The core, softmax(...) v, is the op `trials.ops.attention.causal_attention` (a native CPU
kernel at small head dims, SDPA elsewhere); decoding one token against the cache runs SDPA
(`attend`).

`AttentionCore` is the whole mixer with free input width, output width and head dim, so that the
sliding-window mixer (local_attention.py) and Zamba's shared block (shared_block.py), whose
attention reads concat(hidden, embedding) of width 2d, reuse its projections, RoPE and KV cache.
`Attention` is the core with d_in = d_out = d_model and hd = d_model / n_heads.

Options the published families need: biases on q, k, v (`qkv_bias`, Llama's attention_bias)
and on o (`out_bias`, RecurrentGemma), and partial rotary embeddings: RoPE on the first
rotary_dim = rope_fraction * hd channels of each head only (RecurrentGemma: half), none at all
with rope_fraction = 0 (Jamba and Nemotron-H attention has no positional embedding).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from trials.mixers.base import State
from trials.ops.attention import attend, causal_attention
from trials.ops.rotary import rotate_heads


class AttentionCore(nn.Module):
    """Causal GQA attention from d_in to d_out with free head_dim; no biases.

    State for decoding: {"k", "v": (B, KV, cache_len, hd), "pos": int}, keys stored already
    rotated at their own position.
    """

    def __init__(self, d_in: int, d_out: int, n_heads: int, n_kv_heads: int, head_dim: int,
                 rope_theta: float, rope_fraction: float = 1.0, qkv_bias: bool = False,
                 out_bias: bool = False) -> None:
        super().__init__()
        if n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads={n_kv_heads} must divide n_heads={n_heads}")
        rotary_dim = head_dim * rope_fraction
        if not float(rotary_dim).is_integer() or int(rotary_dim) % 2:
            raise ValueError(f"rope_fraction={rope_fraction} of head_dim={head_dim} must be an "
                             "even number of channels for rotary embeddings")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.rope_theta, self.rotary_dim = rope_theta, int(rotary_dim)
        self.q_proj = nn.Linear(d_in, n_heads * head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(d_in, n_kv_heads * head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d_in, n_kv_heads * head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(n_heads * head_dim, d_out, bias=out_bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.q_proj, self.k_proj, self.v_proj, self.o_proj):
            linear.reset_parameters()

    def project(self, x: Tensor, start: int,
                adapters: Sequence[nn.Module] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, N, d_in) at positions start.. -> q (B, H, N, hd), k and v (B, KV, N, hd).

        `adapters` (Zamba2's per-call attention LoRA): three maps of x whose outputs are added
        to the q, k and v projections."""
        B, N, _ = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if adapters is not None:
            q, k, v = (p + adapter(x) for p, adapter in zip((q, k, v), adapters))
        # RoPE on the first rotary_dim channels of each head, in the projections' layout
        q = rotate_heads(q.view(B, N, self.n_heads, self.head_dim), start, self.rope_theta,
                         self.rotary_dim)
        k = rotate_heads(k.view(B, N, self.n_kv_heads, self.head_dim), start, self.rope_theta,
                         self.rotary_dim)
        v = v.view(B, N, self.n_kv_heads, self.head_dim)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def output(self, o: Tensor) -> Tensor:
        """o: (B, H, N, hd) -> (B, N, d_out)."""
        B, _, N, _ = o.shape
        return self.o_proj(o.transpose(1, 2).reshape(B, N, self.n_heads * self.head_dim))

    def forward(self, x: Tensor, adapters: Sequence[nn.Module] | None = None) -> Tensor:
        q, k, v = self.project(x, 0, adapters)
        return self.output(causal_attention(q, k, v))

    def empty_cache(self, batch: int, length: int, device=None, dtype=None) -> State:
        """Zeroed K and V of `length` entries per sequence, at position 0."""
        weight = self.q_proj.weight
        shape = (batch, self.n_kv_heads, length, self.head_dim)
        device = weight.device if device is None else device
        dtype = weight.dtype if dtype is None else dtype
        return {"k": torch.zeros(shape, device=device, dtype=dtype),
                "v": torch.zeros(shape, device=device, dtype=dtype), "pos": 0}

    def decode(self, x_t: Tensor, state: State, slot: int, n_keys: int,
               adapters: Sequence[nn.Module] | None = None) -> tuple[Tensor, State]:
        """One token: write its key and value at cache `slot`, attend over the first `n_keys`.

        The cache tensors are written in place (decoding runs without autograd); the returned
        state shares them and carries the next position.
        """
        pos = state["pos"]
        q, k, v = self.project(x_t[:, None, :], pos, adapters)  # (B, H, 1, hd), (B, KV, 1, hd)
        k_cache, v_cache = state["k"], state["v"]
        k_cache[:, :, slot] = k[:, :, 0]
        v_cache[:, :, slot] = v[:, :, 0]
        # one query against keys that are all in its past: no mask needed
        o = attend(q, k_cache[:, :, :n_keys], v_cache[:, :, :n_keys], causal=False)
        return self.output(o)[:, 0], {"k": k_cache, "v": v_cache, "pos": pos + 1}

    def init_state(self, batch: int, max_len: int, device=None, dtype=None) -> State:
        return self.empty_cache(batch, max_len, device, dtype)

    def step(self, x_t: Tensor, state: State,
             adapters: Sequence[nn.Module] | None = None) -> tuple[Tensor, State]:
        """x_t: (B, d_in) -> (B, d_out); the key cache grows by one entry per token."""
        pos, capacity = state["pos"], state["k"].shape[2]
        if pos >= capacity:
            raise ValueError(f"decoding position {pos} is past the cache of max_len={capacity}")
        return self.decode(x_t, state, slot=pos, n_keys=pos + 1, adapters=adapters)


class Attention(AttentionCore):
    """The A mixer: d_model -> d_model, head_dim = d_model / n_heads."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, rope_theta: float,
                 rope_fraction: float = 1.0, qkv_bias: bool = False,
                 out_bias: bool = False) -> None:
        if d_model % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide d_model={d_model}")
        super().__init__(d_model, d_model, n_heads, n_kv_heads, d_model // n_heads, rope_theta,
                         rope_fraction, qkv_bias, out_bias)
