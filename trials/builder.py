"""ArchConfig -> HybridLM. The one place that maps config fields to mixer keyword arguments."""

from __future__ import annotations

from typing import Any

import torch

from search_spaces import ArchConfig, Layer
from search_spaces.layers import (
    ATTENTION,
    HYENA,
    LOCAL_ATTENTION,
    MAMBA,
    MAMBA2,
    MIXER_KIND,
    MLP,
    MOE,
    NO_FFN,
    RGLRU,
    SHARED,
)
from trials.ffn import FFNS
from trials.mixers import MIXERS, SharedAttentionBlock
from trials.model import Block, HybridLM


def mixer_kwargs(arch: ArchConfig, layer: Layer) -> dict[str, Any]:
    """The keyword arguments of the mixer of `layer` (all but S, which wraps a shared block)."""
    d = arch.d_model
    attention = dict(d_model=d, n_heads=arch.n_heads, n_kv_heads=arch.n_kv_heads,
                     rope_theta=arch.rope_theta, **attention_options(arch))
    if layer.mixer == ATTENTION:
        return attention
    if layer.mixer == LOCAL_ATTENTION:
        return dict(attention, window=layer.arg)
    if layer.mixer == MAMBA:
        return dict(d_model=d, d_state=arch.d_state, d_conv=arch.d_conv, expand=arch.expand,
                    dt_rank=arch.dt_rank, inner_norms=arch.mamba_inner_norms, eps=arch.norm_eps)
    if layer.mixer == MAMBA2:
        return dict(d_model=d, d_state=arch.m2_d_state, d_conv=arch.d_conv, expand=arch.expand,
                    head_dim=arch.m2_head_dim, n_groups=arch.m2_n_groups, eps=arch.norm_eps)
    if layer.mixer == RGLRU:
        return dict(d_model=d, lru_width=arch.lru_width, n_heads=arch.n_heads, d_conv=arch.d_conv)
    if layer.mixer == HYENA:
        return dict(d_model=d, order=arch.hyena_order, filter_dim=arch.hyena_filter_dim,
                    pos_dim=arch.hyena_pos_dim, short_conv=arch.hyena_short_conv)
    raise KeyError(f"no keyword arguments for mixer {layer.mixer!r}")


def attention_options(arch: ArchConfig) -> dict[str, Any]:
    """What every attention (A, L, the shared block's) takes besides its widths."""
    return dict(rope_fraction=arch.rope_fraction, qkv_bias=arch.attn_qkv_bias,
                out_bias=arch.attn_out_bias)


def mlp_options(arch: ArchConfig) -> dict[str, Any]:
    """What every MLP (the mlp FFN, each MoE expert, the shared block's) takes besides widths."""
    return dict(act=arch.ffn_act, gated=arch.ffn_gated, bias=arch.ffn_bias)


def ffn_kwargs(arch: ArchConfig, kind: str) -> dict[str, Any]:
    if kind == MLP:
        return dict(d_model=arch.d_model, d_ff=arch.d_ff, **mlp_options(arch))
    if kind == MOE:
        return dict(d_model=arch.d_model, d_ff=arch.d_ff, n_experts=arch.moe_experts,
                    top_k=arch.moe_top_k, renormalize=arch.moe_renormalize, **mlp_options(arch))
    raise KeyError(f"no keyword arguments for FFN {kind!r}")


def shared_block_kwargs(arch: ArchConfig) -> dict[str, Any]:
    return dict(d_model=arch.d_model, n_heads=arch.n_heads, n_kv_heads=arch.n_kv_heads,
                d_ff=arch.d_ff, rope_theta=arch.rope_theta, eps=arch.norm_eps,
                attention=attention_options(arch), mlp=mlp_options(arch))


def build_model(arch: ArchConfig, seed: int = 0) -> HybridLM:
    """A freshly initialised model; the same (arch, seed) always gives the same weights, and the
    global torch RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        shared: dict[int, SharedAttentionBlock] = {}
        blocks = []
        for layer in arch.layers:
            if layer.mixer == SHARED:
                if layer.arg not in shared:
                    shared[layer.arg] = SharedAttentionBlock(**shared_block_kwargs(arch))
                mixer = MIXERS[SHARED](shared[layer.arg], d_model=arch.d_model,
                                       lora_rank=arch.shared_lora_rank,
                                       lora_attention=arch.shared_lora_attention)
            else:
                mixer = MIXERS[layer.mixer](**mixer_kwargs(arch, layer))
            ffn = None if layer.ffn == NO_FFN else FFNS[layer.ffn](**ffn_kwargs(arch, layer.ffn))
            blocks.append(Block(mixer, ffn, arch.d_model, arch.norm_eps,
                                pre_norm=MIXER_KIND[layer.mixer].pre_norm))
        model = HybridLM(blocks, arch.vocab_size, arch.d_model, arch.norm_eps,
                         arch.tie_embeddings)
    model.arch = arch  # the config travels with the model it describes
    return model
