"""Costs of the feed-forward parts: SwiGLU MLP and mixture of experts.

Notation: d = d_model, F = d_ff, E = moe_experts, K = moe_top_k.
FLOP conventions are in `search_spaces.cost`.
"""

from __future__ import annotations

from search_spaces.arch import ArchConfig
from search_spaces.cost.report import LayerCost, dense
from search_spaces.layers import Layer


def swiglu_params(d: int, d_ff: int) -> int:
    """gate d->F, up d->F, down F->d, no biases."""
    return 3 * d * d_ff


def swiglu_flops(d: int, d_ff: int) -> int:
    """Three linears (2*d*F each) plus the product silu(gate) * up (F)."""
    return 6 * d * d_ff + d_ff


def mlp(arch: ArchConfig, layer: Layer, context: int) -> LayerCost:
    """params = 3*d*F; flops = 6*d*F + F; no cache."""
    return dense(swiglu_params(arch.d_model, arch.d_ff), swiglu_flops(arch.d_model, arch.d_ff))


def moe(arch: ArchConfig, layer: Layer, context: int) -> LayerCost:
    """params        = router d*E (no bias) + E * 3*d*F
    active_params = router d*E + K * 3*d*F   (what one token uses)
    flops         = 2*d*E + K * (6*d*F + F) + 2*K*d (gate-weighted sum of the K outputs;
                    softmax and top-k selection ignored)
    no cache."""
    d, F, E, K = arch.d_model, arch.d_ff, arch.moe_experts, arch.moe_top_k
    router = d * E
    return LayerCost(params=router + E * swiglu_params(d, F),
                     active_params=router + K * swiglu_params(d, F),
                     flops=float(2 * d * E + K * swiglu_flops(d, F) + 2 * K * d))
