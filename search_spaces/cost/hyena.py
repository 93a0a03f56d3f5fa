"""Cost of the Hyena operator (H): gated long convolutions with implicitly generated filters.

    x -> in_proj -> short conv -> split (x_1 .. x_o, v)
    for i in 1 .. o-1:  v = x_{i+1} * (h_i (*) v + bias_i * v)    (*) = causal FFT convolution
    y = out_proj(x_1 * v)
    h_i = window(t) * FilterMLP(pos(t)), the MLP: Linear(e,f) Sin Linear(f,f) Sin Linear(f,(o-1)d)

Notation: d = d_model, o = hyena_order, e = hyena_pos_dim, f = hyena_filter_dim,
ks = hyena_short_conv, N = context. FLOP conventions are in `search_spaces.cost`; a real FFT of
length L costs 2.5*L*log2(L) FLOPs (half of the 5*L*log2(L) of a complex radix-2 FFT).
"""

from __future__ import annotations

import math

from search_spaces.arch import ArchConfig
from search_spaces.cost.report import LayerCost, dense
from search_spaces.cost.ssm import conv_flops
from search_spaces.layers import Layer


def real_fft_flops(length: int) -> float:
    """FLOPs of one real FFT (or inverse) of `length` points: 2.5*L*log2(L)."""
    return 2.5 * length * math.log2(length)


def long_conv_flops_per_token(context: int) -> float:
    """One channel's causal convolution of N tokens via FFT of length L = 2N, per token:
    FFT of the input, FFT of the filter, L/2+1 complex products (6 FLOPs each), inverse FFT,
    all divided by N."""
    length = 2 * context
    return (3 * real_fft_flops(length) + 6 * (length // 2 + 1)) / context


def hyena(arch: ArchConfig, layer: Layer, context: int) -> LayerCost:
    """params = in_proj (d*(o+1)d + (o+1)d) + short conv ((o+1)d*ks + (o+1)d)
                + filter MLP (e*f + f) + f + (f*f + f) + f + f*(o-1)d
                + filter bias (o-1)d + out_proj (d*d + d)
                (the decay window and positional features are buffers, not parameters)
    flops  = 2*d*(o+1)d + 2*(o+1)d*ks + 2*d*d
             + filter generation per position (one position per token):
               2*e*f + f + 2*f*f + f + 2*f*(o-1)d + (o-1)d   (the f's: Sin frequencies,
               the last term: the decay window)
             + per long conv and channel: long_conv_flops_per_token(N) + 2 (bias * v, add)
             + gates: o products per channel
    cache  = short-conv state (o+1)d*(ks-1) + every past input of each long conv (o-1)*d*N
    """
    d, o, e, f = arch.d_model, arch.hyena_order, arch.hyena_pos_dim, arch.hyena_filter_dim
    ks = arch.hyena_short_conv
    wide, filters = (o + 1) * d, (o - 1) * d
    params = ((d * wide + wide) + (wide * ks + wide) + (e * f + f) + f + (f * f + f) + f
              + f * filters + filters + (d * d + d))
    filter_mlp = 2 * e * f + f + 2 * f * f + f + 2 * f * filters + filters
    flops = (2 * d * wide + conv_flops(wide, ks) + 2 * d * d + filter_mlp
             + filters * (long_conv_flops_per_token(context) + 2) + o * d)
    return dense(params, flops, cache=wide * (ks - 1) + filters * context)
