"""Zamba's shared attention block (S): one set of attention + MLP weights, called from several
layers, each call with its own output projection and its own KV cache.

Shape legend: B batch, N length, d d_model, H heads, KV key/value heads, hs = 2d / H.

    hidden x ──┐
               ├─ concat ─ RMSNorm(2d) ─ attention 2d -> d ─> a ─┬────────────────────── + ─> m
    embedding ─┘                                                 └─ RMSNorm(d) ─ MLP ────┘
    m ─ out_proj (this invocation's own d -> d) ─> y

Feeding the input embeddings back in (Zamba) lets a block shared by layers at every depth
still see the raw tokens. The attention reads 2d channels, so its head dim is hs = 2d / H. The block norms
concat(x, embedding) itself, so an S layer has no RMSNorm of its own before it (as Zamba2).

`SharedAttentionBlock` holds the shared weights; `SharedBlockInvocation` is the mixer of one S
layer. Every invocation of one block id holds a reference to the same block object, so the
block's parameters appear once in `model.parameters()` (torch deduplicates them) and receive
the gradients of every call.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from trials.ffn.mlp import MLP
from trials.mixers.attention import AttentionCore
from trials.mixers.base import State
from trials.norm import RMSNorm


class SharedAttentionBlock(nn.Module):
    """The shared weights: RMSNorm(2d), attention 2d -> d (hs = 2d/H), RMSNorm(d), MLP.

    `attention` holds AttentionCore's options (rope_fraction, qkv_bias, out_bias) and `mlp`
    the MLP's (act, gated, bias)."""

    def __init__(self, d_model: int, n_heads: int, n_kv_heads: int, d_ff: int, rope_theta: float,
                 eps: float, attention: dict | None = None, mlp: dict | None = None) -> None:
        super().__init__()
        if (2 * d_model) % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide 2*d_model={2 * d_model}")
        self.in_norm = RMSNorm(2 * d_model, eps)
        self.attention = AttentionCore(2 * d_model, d_model, n_heads, n_kv_heads,
                                       2 * d_model // n_heads, rope_theta, **(attention or {}))
        self.mlp_norm = RMSNorm(d_model, eps)
        self.mlp = MLP(d_model, d_ff, **(mlp or {}))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in (self.in_norm, self.attention, self.mlp_norm, self.mlp):
            module.reset_parameters()

    def _mlp(self, a: Tensor) -> Tensor:
        return a + self.mlp(self.mlp_norm(a))[0]

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """x, emb: (B, N, d) -> m: (B, N, d)."""
        xe = torch.cat((x, emb), dim=-1)  # (B, N, 2d)
        a = self.attention(self.in_norm(xe))  # (B, N, d)
        return self._mlp(a)

    def init_state(self, batch: int, max_len: int, device=None, dtype=None) -> State:
        return self.attention.init_state(batch, max_len, device, dtype)

    def step(self, x_t: Tensor, state: State, emb_t: Tensor) -> tuple[Tensor, State]:
        """x_t, emb_t: (B, d) -> (m_t: (B, d), state)."""
        xe_t = torch.cat((x_t, emb_t), dim=-1)
        a_t, state = self.attention.step(self.in_norm(xe_t),
                                         state)
        return self._mlp(a_t), state


class SharedBlockInvocation(nn.Module):
    """The S mixer: run the shared `block`, then this layer's own Linear(d, d) into the stream.

    Only `out_proj` belongs to this layer; `block` is a reference, initialised once by itself
    and never copied. The decoding state is this invocation's own KV cache (2*KV*hs*max_len).
    """

    takes_embedding = True

    def __init__(self, block: SharedAttentionBlock, d_model: int) -> None:
        super().__init__()
        self.block = block
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.out_proj.reset_parameters()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.out_proj(self.block(x, emb))

    def init_state(self, batch: int, max_len: int, device=None, dtype=None) -> State:
        return self.block.init_state(batch, max_len, device, dtype)

    def step(self, x_t: Tensor, state: State, emb_t: Tensor) -> tuple[Tensor, State]:
        m_t, state = self.block.step(x_t, state, emb_t)
        return self.out_proj(m_t), state
