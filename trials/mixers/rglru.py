"""Griffin's recurrent block (R): a gated branch times a conv + RG-LRU branch (De et al., 2024).

Shape legend: B batch, N length, d d_model, w lru_width, h n_heads (gate blocks), k d_conv.

    x ─ linear_y ─ GeLU ──────────────────────────┐
    x ─ linear_x ─ causal depthwise conv(k) ─ RG-LRU ─ * ─ linear_out ─ y

RG-LRU, per channel, on the conv output x_t (the gates are block-diagonal maps, h blocks):

    r_t = sigmoid(W_a x_t + b_a)              recurrence gate
    i_t = sigmoid(W_x x_t + b_x)              input gate
    log a_t = -c * softplus(-Lambda) * r_t    (= c * r_t * log sigmoid(Lambda)), c = 8
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)

Everything from the gates to h is computed in fp32 and from log a, so a_t never rounds to 1
and sqrt(1 - a_t^2) keeps its precision near a = 1. Decoding keeps the last k-1 conv inputs
(B, w, k-1) and h (B, w): w*(k-1) + w numbers per sequence, what the cost model counts.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from trials.mixers.base import State
from trials.ops import (block_diagonal_linear, causal_conv1d, causal_conv1d_step, linear_scan,
                        rglru_gates)

C = 8.0  # Griffin's fixed exponent: a_t = sigmoid(Lambda) ** (C * r_t)
A_MIN, A_MAX = 0.9, 0.999  # range of sigmoid(Lambda) at init (Griffin, as in the LRU)


class BlockDiagonalLinear(nn.Module):
    """y = x W + b with W block diagonal: h independent (w/h x w/h) maps, as Griffin's gates."""

    def __init__(self, width: int, n_blocks: int) -> None:
        super().__init__()
        self.n_blocks, self.block = n_blocks, width // n_blocks
        self.weight = nn.Parameter(torch.empty(n_blocks, self.block, self.block))
        self.bias = nn.Parameter(torch.empty(width))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # LeCun normal over each block's fan-in, zero bias: the gates start near sigmoid(0).
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(self.block))
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        """(..., w) -> (..., w), computed in x's dtype (the caller passes fp32)."""
        return block_diagonal_linear(x, self.weight.to(x.dtype), self.bias.to(x.dtype))


class RecurrentBlock(nn.Module):
    """Griffin's recurrent block; `forward` scans in parallel, `step` decodes one token."""

    def __init__(self, d_model: int, lru_width: int, n_heads: int, d_conv: int) -> None:
        super().__init__()
        if lru_width % n_heads:
            raise ValueError(f"lru_width={lru_width} is not a multiple of n_heads={n_heads}")
        self.d_model, self.lru_width, self.d_conv = d_model, lru_width, d_conv
        self.linear_y = nn.Linear(d_model, lru_width)
        self.linear_x = nn.Linear(d_model, lru_width)
        # depthwise conv kept as a (channels, k) matrix, the layout the ops take
        self.conv_weight = nn.Parameter(torch.empty(lru_width, d_conv))
        self.conv_bias = nn.Parameter(torch.empty(lru_width))
        self.gate_a = BlockDiagonalLinear(lru_width, n_heads)  # recurrence gate r_t
        self.gate_x = BlockDiagonalLinear(lru_width, n_heads)  # input gate i_t
        self.a_param = nn.Parameter(torch.empty(lru_width))  # Lambda
        self.linear_out = nn.Linear(lru_width, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.linear_y, self.linear_x, self.linear_out):
            nn.init.normal_(linear.weight, std=1.0 / math.sqrt(linear.in_features))
            nn.init.zeros_(linear.bias)
        bound = 1.0 / math.sqrt(self.d_conv)  # nn.Conv1d's default for a depthwise conv
        nn.init.uniform_(self.conv_weight, -bound, bound)
        nn.init.uniform_(self.conv_bias, -bound, bound)
        self.gate_a.reset_parameters()
        self.gate_x.reset_parameters()
        # Lambda = logit(a), a uniform in [A_MIN, A_MAX]: time constants 1/(1-a) of 10 to 1000
        # steps, which each token's exponent c * r_t then shortens.
        with torch.no_grad():
            a = torch.empty_like(self.a_param, dtype=torch.float32).uniform_(A_MIN, A_MAX)
            self.a_param.copy_(torch.log(a) - torch.log1p(-a))

    def _decay_and_input(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The RG-LRU's a_t and sqrt(1 - a_t^2) * i_t * x_t in fp32, from the conv output x
        (..., w) in any dtype: h_t = a_t * h_{t-1} + b_t."""
        x = x.float()
        coef = -C * F.softplus(-self.a_param.float())  # (w,), <= 0: log a_t = coef * r_t
        return rglru_gates(self.gate_a(x), self.gate_x(x), x, coef)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, d) -> (B, N, d)."""
        gate = F.gelu(self.linear_y(x))  # (B, N, w)
        u = causal_conv1d(self.linear_x(x), self.conv_weight, self.conv_bias)  # (B, N, w)
        a, b = self._decay_and_input(u)
        h = linear_scan(a, b)  # (B, N, w), fp32
        return self.linear_out(gate * h.to(x.dtype))

    def init_state(self, batch: int, max_len: int, device=None, dtype=None) -> State:
        """Zero conv window and recurrent state; their size does not depend on `max_len`."""
        device = device or self.a_param.device
        dtype = dtype or self.a_param.dtype
        w, k = self.lru_width, self.d_conv
        return {
            "conv": torch.zeros(batch, w, k - 1, device=device, dtype=dtype),
            "h": torch.zeros(batch, w, device=device, dtype=dtype),
        }

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """x_t: (B, d) -> (y_t: (B, d), state); the same recurrence as `forward`, one step."""
        gate = F.gelu(self.linear_y(x_t))  # (B, w)
        u, conv = causal_conv1d_step(self.linear_x(x_t), state["conv"], self.conv_weight,
                                     self.conv_bias)
        a, b = self._decay_and_input(u)
        h = a * state["h"].float() + b  # (B, w), fp32
        y_t = self.linear_out(gate * h.to(x_t.dtype))
        return y_t, {"conv": conv.to(state["conv"].dtype), "h": h.to(state["h"].dtype)}
