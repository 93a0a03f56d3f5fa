"""Mamba-1: a selective state-space mixer (Gu & Dao, 2023), pattern letter M.

Shape legend: B batch, L length, d d_model, di = expand*d inner channels, N d_state,
R dt_rank, k d_conv.

    x ─ in_proj ─┬─ x ─ conv ─ silu ─┬────────────── selective scan ─ * ─ out_proj
     (d -> 2di)  │                   └─ x_proj ─ dt, B, C ─┘          │
                 └─ z ─ silu ─────────────────────────────────────────┘

With `inner_norms` (Jamba), dt, B and C each pass an RMSNorm of their own width right after
x_proj, before dt_proj and the scan.

The scan's decay exp(dt * A) and its input dt * x * B both depend on the token, which is what
lets the mixer select what to remember. dt = softplus(dt_proj(low-rank dt)) keeps the step size
positive; A = -exp(A_log) keeps every decay in (0, 1].

Decoding keeps two tensors per sequence, nothing else: the last k-1 conv inputs (B, di, k-1)
and the SSM state (B, di, N), which is what `search_spaces.cost.ssm.mamba` counts as its cache.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from trials.mixers.base import State
from trials.norm import RMSNorm
from trials.ops import (
    causal_conv1d,
    causal_conv1d_step,
    selective_scan,
    selective_scan_step,
    softplus_linear,
)
from trials.ops._memory import join_segments, over_segments
from trials.ops.selective_scan import DEFAULT_CHUNK


def init_dt_bias_(bias: Tensor, dt_min: float = 1e-3, dt_max: float = 1e-1,
                  floor: float = 1e-4) -> None:
    """Set `bias` so that softplus(bias) is log-uniform in [dt_min, dt_max].

    Mamba's step-size initialisation: each channel starts with its own time scale, spread over
    two decades, so that some channels remember for ~10 tokens and others for ~1000.
    """
    with torch.no_grad():
        log_dt = torch.rand_like(bias, dtype=torch.float32) * math.log(dt_max / dt_min)
        dt = (log_dt + math.log(dt_min)).exp().clamp_(min=floor)
        # inverse of softplus: softplus(dt + log(1 - exp(-dt))) = dt
        bias.copy_(dt + torch.log(-torch.expm1(-dt)))


def init_conv_(weight: Tensor, bias: Tensor) -> None:
    """nn.Conv1d's default init for a depthwise conv: uniform in +-1/sqrt(k) (fan-in is k)."""
    bound = weight.shape[-1] ** -0.5
    with torch.no_grad():
        weight.uniform_(-bound, bound)
        bias.uniform_(-bound, bound)


class Mamba(nn.Module):
    """Mamba-1 block. Parameters match `search_spaces.cost.ssm.mamba` exactly."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | None = None, inner_norms: bool = False,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = dt_rank if dt_rank is not None else math.ceil(d_model / 16)
        di, N, R = self.d_inner, d_state, self.dt_rank
        self.in_proj = nn.Linear(d_model, 2 * di, bias=False)
        # depthwise conv kept as a (channels, k) matrix, the layout the ops take
        self.conv_weight = nn.Parameter(torch.empty(di, d_conv))
        self.conv_bias = nn.Parameter(torch.empty(di))
        self.x_proj = nn.Linear(di, R + 2 * N, bias=False)
        self.dt_proj = nn.Linear(R, di, bias=True)
        self.A_log = nn.Parameter(torch.empty(di, N))
        self.D = nn.Parameter(torch.empty(di))
        self.out_proj = nn.Linear(di, d_model, bias=False)
        # Jamba's norms on dt, B and C (None without them)
        self.inner_norms = nn.ModuleList([RMSNorm(R, eps), RMSNorm(N, eps), RMSNorm(N, eps)]) \
            if inner_norms else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.in_proj, self.x_proj, self.out_proj):
            linear.reset_parameters()
        for norm in self.inner_norms or ():
            norm.reset_parameters()
        init_conv_(self.conv_weight, self.conv_bias)
        # dt_proj's weight scaled by R^-1/2 so the low-rank dt starts with unit-order variance;
        # the bias alone sets the initial step sizes
        bound = self.dt_rank ** -0.5
        nn.init.uniform_(self.dt_proj.weight, -bound, bound)
        init_dt_bias_(self.dt_proj.bias)
        with torch.no_grad():
            # S4D-real: A_n = -(n + 1), the same spectrum for every channel
            n = torch.arange(1, self.d_state + 1, dtype=torch.float32)
            self.A_log.copy_(n.log().expand(self.d_inner, -1))
            self.D.fill_(1.0)

    def _selection(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The token-dependent dt (fp32, fp64 in an fp64 model; > 0), B and C from the conv
        output x (..., di)."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        if self.inner_norms is not None:
            dt, B, C = (norm(part) for norm, part in zip(self.inner_norms, (dt, B, C)))
        # dt_proj and its softplus as one op, the step size in fp32 (fp64 in an fp64 model): in
        # bf16 small step sizes would round to zero and freeze the state
        dt = softplus_linear(dt, self.dt_proj.weight, self.dt_proj.bias)
        return dt, B, C

    def _A(self) -> Tensor:
        return -torch.exp(self.A_log.float())  # (di, N), negative

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, L, d) -> (B, L, d), over segments of the sequence (`over_segments`), each
        starting from the conv window and SSM state the previous one ended with."""
        batch = x.shape[0]
        segment = functools.partial(self._segment, A=self._A())
        return join_segments(over_segments(x, 4 * batch * 2 * self.d_inner, segment,
                                           DEFAULT_CHUNK))

    def _segment(self, x: Tensor, carried: tuple[Tensor, Tensor] | None,
                 A: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One segment x: (B, l, d) from `carried` (conv window, SSM state; None: zeros)."""
        conv, ssm = carried or (None, None)
        # in_proj as two products, so that x_in and z come out contiguous: the conv and the scan
        # read them in place, and the backward pass sums two input gradients instead of
        # concatenating the halves of one (B, l, 2 di) gradient
        w_x, w_z = self.in_proj.weight.chunk(2, dim=0)  # (di, d) each
        x_in, z = F.linear(x, w_x), F.linear(x, w_z)  # (B, l, di) each
        x_in, conv = causal_conv1d(x_in, self.conv_weight, self.conv_bias, state=conv,
                                   return_state=True, silu=True)
        dt, B, C = self._selection(x_in)  # (B, l, di), (B, l, N), (B, l, N)
        y, ssm = selective_scan(x_in, dt, A, B, C, D=self.D, z=z, h0=ssm,
                                return_state=True)  # (B, l, di), x's dtype
        return self.out_proj(y), (conv, ssm)

    def init_state(self, batch: int, max_len: int, device=None, dtype=None) -> State:
        """Zero conv window and SSM state; their size does not depend on `max_len`."""
        device = device if device is not None else self.A_log.device
        dtype = dtype if dtype is not None else self.in_proj.weight.dtype
        return {
            "conv": torch.zeros(batch, self.d_inner, self.d_conv - 1, device=device, dtype=dtype),
            "ssm": torch.zeros(batch, self.d_inner, self.d_state, device=device, dtype=dtype),
        }

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One token: x_t (B, d) -> (y_t (B, d), state). The same maths as `forward`."""
        x_in, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B, di) each
        x_in, conv = causal_conv1d_step(x_in, state["conv"], self.conv_weight, self.conv_bias)
        x_in = F.silu(x_in)
        dt, B, C = self._selection(x_in)
        y, ssm = selective_scan_step(x_in, dt, self._A(), B, C, state["ssm"], D=self.D, z_t=z)
        new_state = {"conv": conv.to(state["conv"].dtype), "ssm": ssm.to(state["ssm"].dtype)}
        return self.out_proj(y), new_state
