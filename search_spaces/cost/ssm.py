"""Costs of the selective state-space mixers: Mamba-1 (M) and Mamba-2 (M2).

Notation: d = d_model, di = expand*d, k = d_conv, N_ctx = context.
FLOP conventions are in `search_spaces.cost`. Scan FLOPs count the recurrent form's arithmetic,
which is the same for every token and independent of N_ctx (chunked parallel algorithms spend
somewhat more; that overhead is an implementation choice, not part of the architecture).
"""

from __future__ import annotations

from search_spaces.arch import ArchConfig
from search_spaces.cost.report import LayerCost, dense
from search_spaces.layers import Layer


def conv_flops(channels: int, width: int) -> int:
    """Causal depthwise conv with bias: width multiplies + width adds (bias included)."""
    return 2 * channels * width


def mamba(arch: ArchConfig, layer: Layer, context: int) -> LayerCost:
    """Mamba-1, R = dt_rank, N = d_state.

    params = in_proj d*2di + conv (di*k + di) + x_proj di*(R+2N) + dt_proj (R*di + di)
             + A_log di*N + D di + out_proj di*d
             + RMSNorms on dt, B, C (R + 2N) if mamba_inner_norms (Jamba; FLOPs not counted)
    flops  = 2*d*2di + 2*di*k + 2*di*(R+2N) + 2*R*di + 2*di*d + scan,
             scan = 6*di*N + 4*di:
               per (channel, state): dt*A (1; exp ignored), B*(dt*x) (1),
                                     h = dA*h + dBx (2), y += C*h (2)          -> 6
               per channel:          dt*x (1), + D*x (2), * silu(z) (1)        -> 4
    cache  = conv state di*(k-1) (the last k-1 inputs: what decoding needs; HF's caches keep k)
    state  = SSM state di*N
    """
    d, k = arch.d_model, arch.d_conv
    di, R, N = arch.expand * d, arch.dt_rank, arch.d_state
    params = (d * 2 * di + (di * k + di) + di * (R + 2 * N) + (R * di + di)
              + di * N + di + di * d + (R + 2 * N if arch.mamba_inner_norms else 0))
    flops = (2 * d * 2 * di + conv_flops(di, k) + 2 * di * (R + 2 * N) + 2 * R * di
             + 2 * di * d + 6 * di * N + 4 * di)
    return dense(params, flops, cache=di * (k - 1), state=di * N)


def mamba2(arch: ArchConfig, layer: Layer, context: int) -> LayerCost:
    """Mamba-2, P = m2_head_dim, nh = di/P, G = m2_n_groups, N = m2_d_state, C = di + 2*G*N.

    params = in_proj d*(2di + 2GN + nh) + conv (C*k + C) + dt_bias nh + A_log nh + D nh
             + gated RMSNorm di (counted here, with the mixer, not under "norm") + out_proj di*d
    flops  = 2*d*(2di + 2GN + nh) + 2*C*k + 2*di*d + scan,
             scan = 5*di*N + 4*di + 2*nh:
               per head:             dt + dt_bias (1), dt*A (1; exp ignored)   -> 2
               per (channel, state): h = dA*h + (dt*x)*B (3), y += C*h (2)     -> 5
               per channel:          dt*x (1), + D*x (2), * silu(z) (1)        -> 4
    cache  = conv state C*(k-1)
    state  = SSM state nh*P*N
    """
    d, k = arch.d_model, arch.d_conv
    di, P, G, N = arch.expand * d, arch.m2_head_dim, arch.m2_n_groups, arch.m2_d_state
    nh = di // P
    conv_channels = di + 2 * G * N
    params = (d * (2 * di + 2 * G * N + nh) + (conv_channels * k + conv_channels)
              + 3 * nh + di + di * d)
    flops = (2 * d * (2 * di + 2 * G * N + nh) + conv_flops(conv_channels, k) + 2 * di * d
             + 5 * di * N + 4 * di + 2 * nh)
    return dense(params, flops, cache=conv_channels * (k - 1), state=nh * P * N)
