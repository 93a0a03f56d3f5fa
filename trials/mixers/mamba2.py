"""Mamba-2: the state-space-duality (SSD) mixer (Dao & Gu, 2024), pattern letter M2.

Shape legend: B batch, L length, d d_model, di = expand*d inner channels, P head_dim,
nh = di/P heads, G n_groups (B and C shared by nh/G heads each), N d_state, k d_conv,
Cc = di + 2*G*N conv channels.

    x ─ in_proj ─┬─ z ────────────────────────────────────────── silu ─┐
                 ├─ xBC ─ causal depthwise conv ─ silu ─ x, B, C ─ SSD ─ * ─ RMSNorm ─ out_proj
                 └─ dt ─ softplus(dt + dt_bias) ──────────────────┘

Against Mamba-1: A is one scalar per head (so the state update is a scalar decay per head,
which is what makes the chunked matrix form possible), dt is produced directly by in_proj,
B and C come through the conv with x, and a gated RMSNorm steadies the output. The norm takes
its statistics over each of the G groups of di/G channels (as the reference mamba_ssm and HF's
Mamba2 and NemotronH do; with G = 1 over all di). Its weight (di,) belongs to this mixer in the
cost model.

Decoding keeps the conv window (B, Cc, k-1) and the SSM state (B, nh, P, N), nothing else,
which is what `search_spaces.cost.ssm.mamba2` counts as its cache.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from trials.mixers.base import State
from trials.mixers.mamba import init_conv_, init_dt_bias_
from trials.norm import RMSNorm
from trials.ops import causal_conv1d, causal_conv1d_step, glu, naive_rms_norm, softplus, ssd
from trials.ops._memory import join_segments, over_segments

SSD_CHUNK = 64  # Q, the chunk length of the SSD's matrix form


class Mamba2(nn.Module):
    """Mamba-2 block. Parameters match `search_spaces.cost.ssm.mamba2` exactly."""

    def __init__(self, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2,
                 head_dim: int = 32, n_groups: int = 1, eps: float = 1e-5) -> None:
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.head_dim, self.n_groups = head_dim, n_groups
        self.n_heads = self.d_inner // head_dim
        self.conv_channels = self.d_inner + 2 * n_groups * d_state
        di, nh, Cc = self.d_inner, self.n_heads, self.conv_channels
        self.in_proj = nn.Linear(d_model, di + Cc + nh, bias=False)  # z, xBC, dt
        self.conv_weight = nn.Parameter(torch.empty(Cc, d_conv))
        self.conv_bias = nn.Parameter(torch.empty(Cc))
        self.dt_bias = nn.Parameter(torch.empty(nh))
        self.A_log = nn.Parameter(torch.empty(nh))
        self.D = nn.Parameter(torch.empty(nh))
        self.norm = RMSNorm(di, eps)
        self.out_proj = nn.Linear(di, d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.in_proj.reset_parameters()
        self.out_proj.reset_parameters()
        self.norm.reset_parameters()
        init_conv_(self.conv_weight, self.conv_bias)
        init_dt_bias_(self.dt_bias)
        with torch.no_grad():
            # per-head decay rates spread over [1, 16]: heads start at different time scales
            self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1.0, 16.0).log())
            self.D.fill_(1.0)

    @property
    def _conv_parts(self) -> list[int]:
        """The conv channels' split into x, B and C."""
        GN = self.n_groups * self.d_state
        return [self.d_inner, GN, GN]

    def _ssm_inputs(self, x: Tensor, B: Tensor, C: Tensor, dt: Tensor) -> tuple[Tensor, ...]:
        """Conv outputs x (B, L, di), B and C (B, L, G N), raw dt (B, L, nh) -> x, dt, A, B, C
        in the ssd layout."""
        batch, length = x.shape[:2]
        x = x.reshape(batch, length, self.n_heads, self.head_dim)  # (B, L, nh, P)
        B = B.reshape(batch, length, self.n_groups, self.d_state)  # (B, L, G, N)
        C = C.reshape(batch, length, self.n_groups, self.d_state)  # (B, L, G, N)
        # fp32 so that small step sizes survive in bf16
        dt = softplus(dt.float() + self.dt_bias.float())  # (B, L, nh)
        A = -torch.exp(self.A_log.float())  # (nh,), negative
        return x, dt, A, B, C

    def _output(self, y: Tensor, z: Tensor) -> Tensor:
        """Gate, normalise and project: y (B, L, nh, P), z (B, L, di) -> (B, L, d)."""
        y = y.reshape(*z.shape)  # (B, L, di)
        # gate in fp32 (silu(z) * y, one pass each way on the CPU); the norm then takes
        # statistics in fp32 too
        gated = glu(z.float(), y.float()).to(z.dtype)
        if self.n_groups == 1:
            return self.out_proj(self.norm(gated))
        weight = self.norm.weight.view(self.n_groups, -1)  # per group: (G, di/G)
        grouped = naive_rms_norm(gated.unflatten(-1, (self.n_groups, -1)), weight, self.norm.eps)
        return self.out_proj(grouped.flatten(-2))

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, L, d) -> (B, L, d), over segments of whole SSD chunks (`over_segments`),
        each starting from the conv window and SSM state the previous one ended with."""
        # the widest per-token tensors: in_proj's output and the SSD's (nh, Q) decay rows
        width = max(self.in_proj.out_features, self.n_heads * SSD_CHUNK)
        return join_segments(over_segments(x, 4 * x.shape[0] * width, self._segment,
                                           SSD_CHUNK))

    def _segment(self, x: Tensor, carried: tuple[Tensor, Tensor] | None
                 ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """One segment x: (B, l, d) from `carried` (conv window, SSM state; None: zeros).

        in_proj runs as five products (z, x, B, C, dt) and the conv as three (x, B, C, each
        with its channels' weights and window), so that every part comes out contiguous: the
        SSD reads x, B and C in place where slices of one conv output were copied, and the
        backward pass sums the products' input gradients where it concatenated the parts'."""
        conv, ssm = carried or (None, None)
        parts = self._conv_parts
        w_z, w_x, w_B, w_C, w_dt = self.in_proj.weight.split([self.d_inner, *parts,
                                                              self.n_heads])
        windows = (None,) * 3 if conv is None else conv.split(parts, dim=1)
        outputs, states = [], []
        for weight, conv_weight, conv_bias, window in zip(
                (w_x, w_B, w_C), self.conv_weight.split(parts), self.conv_bias.split(parts),
                windows):
            out, state = causal_conv1d(F.linear(x, weight), conv_weight, conv_bias,
                                       state=window, return_state=True, silu=True)
            outputs.append(out)
            states.append(state)
        x_ssm, dt, A, B, C = self._ssm_inputs(*outputs, F.linear(x, w_dt))
        y, ssm = ssd(x_ssm, dt, A, B, C, D=self.D, h0=ssm, chunk_size=SSD_CHUNK,
                     return_state=True)  # (B, l, nh, P)
        return self._output(y, F.linear(x, w_z)), (torch.cat(states, dim=1), ssm)

    def init_state(self, batch: int, max_len: int, device=None, dtype=None) -> State:
        """Zero conv window and SSM state; their size does not depend on `max_len`."""
        device = device if device is not None else self.A_log.device
        dtype = dtype if dtype is not None else self.in_proj.weight.dtype
        return {
            "conv": torch.zeros(batch, self.conv_channels, self.d_conv - 1,
                                device=device, dtype=dtype),
            "ssm": torch.zeros(batch, self.n_heads, self.head_dim, self.d_state,
                               device=device, dtype=dtype),
        }

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """One token: x_t (B, d) -> (y_t (B, d), state). The same maths as `forward`."""
        z, xBC, dt = self.in_proj(x_t).split([self.d_inner, self.conv_channels, self.n_heads],
                                             dim=-1)
        xBC, conv = causal_conv1d_step(xBC, state["conv"], self.conv_weight, self.conv_bias)
        xBC = F.silu(xBC)[:, None]  # (B, 1, Cc)
        x_ssm, dt, A, B, C = self._ssm_inputs(*xBC.split(self._conv_parts, dim=-1), dt[:, None])
        # the SSD of a one-token sequence, starting from the carried state
        y, ssm = ssd(x_ssm, dt, A, B, C, D=self.D, h0=state["ssm"], chunk_size=1,
                     return_state=True)
        new_state = {"conv": conv.to(state["conv"].dtype), "ssm": ssm.to(state["ssm"].dtype)}
        return self._output(y, z[:, None])[:, 0], new_state
