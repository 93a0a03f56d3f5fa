"""Costs of the attention mixers: global (A), sliding-window (L), Zamba's shared block (S).

Notation: d = d_model, H = n_heads, KV = n_kv_heads, hd = d/H, N = context.
FLOP conventions are in `search_spaces.cost` (a linear in->out is 2*in*out, bias or not).
"""

from __future__ import annotations

from search_spaces.arch import ArchConfig
from search_spaces.cost.ffn import mlp_flops, mlp_params
from search_spaces.cost.report import LayerCost, dense
from search_spaces.layers import Layer


def _qkvo_weights(arch: ArchConfig, d_in: int, head_dim: int) -> int:
    """Weights of q d_in->H*hd, k and v d_in->KV*hd, o H*hd->d (FLOPs are 2 per weight)."""
    H, KV = arch.n_heads, arch.n_kv_heads
    return d_in * H * head_dim + 2 * d_in * KV * head_dim + H * head_dim * arch.d_model


def _qkvo(arch: ArchConfig, d_in: int, head_dim: int) -> int:
    """Parameters of the four projections: their weights, plus biases H*hd + 2*KV*hd on q, k,
    v if attn_qkv_bias and d on o if attn_out_bias."""
    biases = (arch.n_heads + 2 * arch.n_kv_heads) * head_dim if arch.attn_qkv_bias else 0
    return _qkvo_weights(arch, d_in, head_dim) + biases \
        + (arch.d_model if arch.attn_out_bias else 0)


def _mean_keys_windowed(context: int, window: int) -> float:
    """Mean over t = 1..N of min(t, w), the keys a causal window-w query sees.

    With m = min(N, w): sum_{t<=m} t + (N - m)*w = m(m+1)/2 + (N - m)*w; divided by N.
    For N <= w this is (N+1)/2, the global-attention mean.
    """
    m = min(context, window)
    return (m * (m + 1) // 2 + (context - m) * window) / context


def _attention_flops(arch: ArchConfig, head_dim: int, mean_keys: float) -> float:
    """Scores q.k plus the weighted sum of v: 2 * (2*H*hd*keys) = 4*H*hd*keys per token."""
    return 4 * arch.n_heads * head_dim * mean_keys


def attention(arch: ArchConfig, window: int | None, context: int) -> LayerCost:
    """A (window None) or L (window w).

    params = d*H*hd + 2*d*KV*hd + H*hd*d, plus the biases of `_qkvo` (RoPE has none)
    flops  = 2*weights (projections) + 4*H*hd*keys,
             keys = (N+1)/2 for A, mean_t min(t, w) for L
    cache  = 2*KV*hd*N for A; 2*KV*hd*min(N, w) for L (a rolling window of w entries)
    """
    hd = arch.d_model // arch.n_heads
    params = _qkvo(arch, arch.d_model, hd)
    if window is None:
        keys, cached_tokens = (context + 1) / 2, context
    else:
        keys, cached_tokens = _mean_keys_windowed(context, window), min(context, window)
    flops = 2 * _qkvo_weights(arch, arch.d_model, hd) + _attention_flops(arch, hd, keys)
    return dense(params, flops, cache=2 * arch.n_kv_heads * hd * cached_tokens)


def global_attention(arch: ArchConfig, layer: Layer, context: int) -> LayerCost:
    return attention(arch, None, context)


def local_attention(arch: ArchConfig, layer: Layer, context: int) -> LayerCost:
    return attention(arch, layer.arg, context)


def shared_weights(arch: ArchConfig) -> int:
    """Weights of one shared block (counted once per distinct id), hs = 2d/H:

    RMSNorm(2d) + [q 2d->H*hs, k, v 2d->KV*hs, o H*hs->d, biases per `_qkvo`] + RMSNorm(d)
    + the MLP (`mlp_params`). The two norms count here, with the block, not under "norm".
    """
    d = arch.d_model
    hs = 2 * d // arch.n_heads
    return 2 * d + _qkvo(arch, 2 * d, hs) + d + mlp_params(arch)


def lora_params(arch: ArchConfig) -> int:
    """One invocation's adapters, rank r = shared_lora_rank, no biases: the MLP's d -> r -> g*F
    (g = 2 if gated: gate and up), r*(d + g*F); with shared_lora_attention also q, k, v's
    2d -> r -> 2d (H*hs = KV*hs = 2d), 3*r*4d."""
    r, d = arch.shared_lora_rank, arch.d_model
    attention = 3 * r * 4 * d if arch.shared_lora_attention else 0
    return r * (d + (2 if arch.ffn_gated else 1) * arch.d_ff) + attention


def shared_invocation(arch: ArchConfig, layer: Layer, context: int) -> LayerCost:
    """One S layer: its own linear d->d (no bias) into the residual stream and its own MLP
    adapter, plus the compute and KV cache of running the shared block once.

    params = d*d + lora_params
    flops  = 2*qkvo weights(2d) + 4*H*hs*(N+1)/2 + mlp_flops + 2*d*d
             + 2*lora_params + g*F (+ 3*2d with attention adapters): the adapters and adding
             their outputs, when r > 0
    cache  = 2*KV*hs*N (every invocation keeps its own keys and values)
    The layer has no RMSNorm of its own before the block (the block norms its input).
    """
    d = arch.d_model
    hs = 2 * d // arch.n_heads
    block_flops = 2 * _qkvo_weights(arch, 2 * d, hs) \
        + _attention_flops(arch, hs, (context + 1) / 2) + mlp_flops(arch)
    lora = lora_params(arch)
    adds = (2 if arch.ffn_gated else 1) * arch.d_ff + (6 * d if arch.shared_lora_attention else 0)
    lora_flops = 2 * lora + adds if lora else 0
    return dense(d * d + lora, block_flops + 2 * d * d + lora_flops,
                 cache=2 * arch.n_kv_heads * hs * context)
