"""Costs of the feed-forward parts: the MLP (gated or not, with or without biases) and the
mixture of experts of such MLPs.

Notation: d = d_model, F = d_ff, E = moe_experts, K = moe_top_k, g = 2 if ffn_gated else 1
(the number of d -> F projections: gate and up, or up alone).
FLOP conventions are in `search_spaces.cost`.
"""

from __future__ import annotations

from search_spaces.arch import ArchConfig
from search_spaces.cost.report import LayerCost, dense
from search_spaces.layers import Layer


def mlp_params(arch: ArchConfig) -> int:
    """g linears d->F and down F->d: (g+1)*d*F, plus biases g*F + d if ffn_bias."""
    d, F, g = arch.d_model, arch.d_ff, 2 if arch.ffn_gated else 1
    return (g + 1) * d * F + (g * F + d if arch.ffn_bias else 0)


def mlp_flops(arch: ArchConfig) -> int:
    """The g+1 linears (2*d*F each) plus, when gated, the product act(gate) * up (F); the
    activation itself (and relu2's square) is a nonlinearity, not counted."""
    d, F, g = arch.d_model, arch.d_ff, 2 if arch.ffn_gated else 1
    return 2 * (g + 1) * d * F + (F if arch.ffn_gated else 0)


def mlp(arch: ArchConfig, layer: Layer, context: int) -> LayerCost:
    """params = mlp_params; flops = mlp_flops; no cache."""
    return dense(mlp_params(arch), mlp_flops(arch))


def moe(arch: ArchConfig, layer: Layer, context: int) -> LayerCost:
    """params        = router d*E (no bias) + E * mlp_params
    active_params = router d*E + K * mlp_params   (what one token uses)
    flops         = 2*d*E + K * mlp_flops + 2*K*d (gate-weighted sum of the K outputs;
                    softmax and top-k selection ignored)
    no cache."""
    d, E, K = arch.d_model, arch.moe_experts, arch.moe_top_k
    router, expert = d * E, mlp_params(arch)
    return LayerCost(params=router + E * expert, active_params=router + K * expert,
                     flops=float(2 * d * E + K * mlp_flops(arch) + 2 * K * d))
