"""Zamba's shared attention block (S): one set of attention + MLP weights, called from several
layers, each call with its own output projection and its own KV cache.

Shape legend: B batch, N length, d d_model, H heads, KV key/value heads, hs = 2d / H.

    hidden x ──┐
               ├─ concat ─ RMSNorm(2d) ─ attention 2d -> d ─> a ─┬────────────────────── + ─> m
    embedding ─┘                                                 └─ RMSNorm(d) ─ MLP ────┘
    m ─ out_proj (this invocation's own d -> d) ─> y

With a LoRA rank r > 0 (Zamba2's adapters) each invocation also owns a low-rank map
d -> r -> (gate and up) whose output is added to the shared MLP's pre-activations, so every call
of one block can specialise its MLP a little; with `lora_attention`, three more maps
2d -> r -> 2d added to the attention's q, k and v (which needs KV = H heads).

Feeding the input embeddings back in (Zamba) lets a block shared by layers at every depth
still see the raw tokens. The attention reads 2d channels, so its head dim is hs = 2d / H.
The block norms concat(x, embedding) itself, so an S layer has no RMSNorm of its own before it
(as Zamba2).

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

    def _mlp(self, a: Tensor, adapter: nn.Module | None) -> Tensor:
        return a + self.mlp(self.mlp_norm(a), adapter)[0]

    def forward(self, x: Tensor, emb: Tensor, adapter: nn.Module | None = None,
                qkv_adapters: nn.ModuleList | None = None) -> Tensor:
        """x, emb: (B, N, d) -> m: (B, N, d); `adapter` and `qkv_adapters`: the calling
        layer's MLP and attention adapters."""
        xe = torch.cat((x, emb), dim=-1)  # (B, N, 2d)
        a = self.attention(self.in_norm(xe), qkv_adapters)  # (B, N, d)
        return self._mlp(a, adapter)

    def init_state(self, batch: int, max_len: int, device=None, dtype=None) -> State:
        return self.attention.init_state(batch, max_len, device, dtype)

    def step(self, x_t: Tensor, state: State, emb_t: Tensor, adapter: nn.Module | None = None,
             qkv_adapters: nn.ModuleList | None = None) -> tuple[Tensor, State]:
        """x_t, emb_t: (B, d) -> (m_t: (B, d), state)."""
        xe_t = torch.cat((x_t, emb_t), dim=-1)
        a_t, state = self.attention.step(self.in_norm(xe_t), state, qkv_adapters)
        return self._mlp(a_t, adapter), state


class SharedBlockInvocation(nn.Module):
    """The S mixer: run the shared `block`, then this layer's own Linear(d, d) into the stream.

    Only `out_proj` belongs to this layer; `block` is a reference, initialised once by itself
    and never copied. The decoding state is this invocation's own KV cache (2*KV*hs*max_len).
    """

    takes_embedding = True

    def __init__(self, block: SharedAttentionBlock, d_model: int, lora_rank: int = 0,
                 lora_attention: bool = False) -> None:
        super().__init__()
        self.block = block
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        mlp, attention = block.mlp, block.attention
        width = mlp.up.out_features * (1 if mlp.gate is None else 2)
        # this invocation's adapters: MLP d -> r -> gate and up; attention 2d -> r -> q, k, v
        self.adapter = _low_rank(d_model, lora_rank, width) if lora_rank else None
        self.qkv_adapters = None
        if lora_rank and lora_attention:
            d_in = attention.q_proj.in_features
            self.qkv_adapters = nn.ModuleList(
                _low_rank(d_in, lora_rank, proj.out_features)
                for proj in (attention.q_proj, attention.k_proj, attention.v_proj))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.out_proj.reset_parameters()
        for adapter in ([self.adapter] if self.adapter is not None else []) \
                + list(self.qkv_adapters or ()):
            # near LoRA's start (a zero up-projection, every invocation beginning as the shared
            # block itself), but small rather than zero so that both factors learn from step 1
            adapter[0].reset_parameters()
            adapter[1].reset_parameters()
            with torch.no_grad():
                adapter[1].weight.mul_(0.01)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return self.out_proj(self.block(x, emb, self.adapter, self.qkv_adapters))

    def init_state(self, batch: int, max_len: int, device=None, dtype=None) -> State:
        return self.block.init_state(batch, max_len, device, dtype)

    def step(self, x_t: Tensor, state: State, emb_t: Tensor) -> tuple[Tensor, State]:
        m_t, state = self.block.step(x_t, state, emb_t, self.adapter, self.qkv_adapters)
        return self.out_proj(m_t), state


def _low_rank(d_in: int, rank: int, d_out: int) -> nn.Sequential:
    """d_in -> rank -> d_out, no biases: one LoRA-style adapter."""
    return nn.Sequential(nn.Linear(d_in, rank, bias=False), nn.Linear(rank, d_out, bias=False))
