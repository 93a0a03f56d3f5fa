"""Cost of Griffin's recurrent block (R): two branches, one gated by the RG-LRU.

    x -> linear_x -> conv(k) -> RG-LRU --\
                                          * -> linear_out -> out
    x -> linear_y -> GeLU ----------------/

Notation: d = d_model, w = lru_width, h = n_heads (gate blocks), k = d_conv.
FLOP conventions are in `search_spaces.cost`.
"""

from __future__ import annotations

from search_spaces.arch import ArchConfig
from search_spaces.cost.report import LayerCost, dense
from search_spaces.cost.ssm import conv_flops
from search_spaces.layers import Layer


def rglru_block(arch: ArchConfig, layer: Layer, context: int) -> LayerCost:
    """params = linear_x (d*w + w) + linear_y (d*w + w) + conv (w*k + w)
                + input gate and a gate, each h blocks of (w/h)^2 plus bias w: 2*(w*w/h + w)
                + a_param w + linear_out (w*d + d)
    flops  = 2*d*w * 2 + 2*w*k + 2 * 2*w*(w/h) + 2*w*d + 8*w, where the 8 per channel are
             log a = c*softplus(a_param) * r (1; the softplus term is a per-channel constant),
             a^2 and 1 - a^2 (2; exp and sqrt ignored), i*x (1), times sqrt(1 - a^2) (1),
             h = a*h + ... (2), and the branch product RG-LRU(x) * GeLU(y) (1)
    cache  = conv state w*(k-1)
    state  = recurrent state w
    """
    d, w, h, k = arch.d_model, arch.lru_width, arch.n_heads, arch.d_conv
    gate = w * (w // h) + w
    params = 2 * (d * w + w) + (w * k + w) + 2 * gate + w + (w * d + d)
    flops = 2 * 2 * d * w + conv_flops(w, k) + 2 * 2 * w * (w // h) + 2 * w * d + 8 * w
    return dense(params, flops, cache=w * (k - 1), state=w)
