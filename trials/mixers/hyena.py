"""The Hyena operator (H): gated long convolutions with implicitly generated filters
(Poli et al., 2023).

Shape legend: B batch, N length, d d_model, o order, e pos_dim, f filter_dim, ks short_conv.

    x ─ in_proj ─ short causal conv(ks) ─ split ─> x_0, x_1, .., x_{o-1}, v     each (B, N, d)
    for i in 1 .. o-1:   v = h_i (*) (v * x_i) + bias_i * (v * x_i)           (*) causal FFT conv
    y = out_proj(v * x_0)

    h(t) = window(t) * MLP(z(t)),   MLP = Linear(e, f) Sin Linear(f, f) Sin Linear(f, (o-1)d)

z(t) = [t/T, cos(2 pi k t/T), sin(2 pi k t/T) for k = 1 .. (e-1)/2] and the decay window are
fixed functions of the absolute position t, scaled to a reference length T (Hyena's l_max), never
to the length of the batch at hand: a filter that depended on N would give y_t a dependence on
the future length, and decoding could not reproduce `forward`. Longer sequences still work (the
features just continue past t = T, where the window has decayed).

Decoding keeps the short-conv window (B, (o+1)d, ks-1) and, for each long conv, every input it
has seen (B, o-1, max_len, d), written in place like a KV cache; the position is a Python int.
The filter is derived from weights, so it is not state: see `_decoding_filter`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from trials.mixers.base import State
from trials.ops import causal_conv1d, causal_conv1d_step, fft_long_conv
from trials.ops._memory import join_segments, over_segments

REFERENCE_LEN = 2048  # T: positions are scaled by it (RecurrentGemma's training context)
# The window exp(-rate * t/T) falls to DECAY_TARGET at t/T = 0.3 for the fastest channel of each
# filter and at 1.5 for the slowest, with rates spread linearly in between (Hyena's modulation).
DECAY_TARGET, FAST_DECAY, SLOW_DECAY = 1e-2, 0.3, 1.5
SIN_FREQ_INIT = 1.0


class Sin(nn.Module):
    """sin(freq * x) with one learnable frequency per feature."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.freq = nn.Parameter(torch.full((dim,), SIN_FREQ_INIT))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sin(self.freq.to(x.dtype) * x)


class ImplicitFilter(nn.Module):
    """The o-1 long filters, (length, (o-1)*d), as a function of position: window * MLP(z)."""

    def __init__(self, d_model: int, n_filters: int, filter_dim: int, pos_dim: int,
                 reference_len: int = REFERENCE_LEN) -> None:
        super().__init__()
        self.d_model, self.n_filters, self.pos_dim = d_model, n_filters, pos_dim
        self.reference_len = reference_len
        self.first = nn.Linear(pos_dim, filter_dim)
        self.act1 = Sin(filter_dim)
        self.hidden = nn.Linear(filter_dim, filter_dim)
        self.act2 = Sin(filter_dim)
        self.last = nn.Linear(filter_dim, n_filters * d_model, bias=False)

    def features(self, length: int, device) -> Tensor:
        """z(t) for t = 0 .. length-1: (length, e), fp32."""
        t = torch.arange(length, device=device, dtype=torch.float32) / self.reference_len
        bands = torch.arange(1, (self.pos_dim - 1) // 2 + 1, device=device, dtype=torch.float32)
        angle = 2 * math.pi * t[:, None] * bands  # (length, (e-1)/2)
        return torch.cat([t[:, None], torch.cos(angle), torch.sin(angle)], dim=-1)

    def window(self, length: int, device) -> Tensor:
        """Per-channel exponential decay, (length, (o-1)*d): every filter gets the full range."""
        t = torch.arange(length, device=device, dtype=torch.float32) / self.reference_len
        slowest = math.log(1 / DECAY_TARGET) / SLOW_DECAY
        fastest = math.log(1 / DECAY_TARGET) / FAST_DECAY
        rates = torch.linspace(slowest, fastest, self.d_model, device=device)
        return torch.exp(-t[:, None] * rates.repeat(self.n_filters))

    def forward(self, length: int, device) -> Tensor:
        """h: (length, (o-1)*d) in fp32 whatever the weights' dtype: it feeds an fp32 FFT."""
        z = self.features(length, device)
        z = self.act1(F.linear(z, self.first.weight.float(), self.first.bias.float()))
        z = self.act2(F.linear(z, self.hidden.weight.float(), self.hidden.bias.float()))
        return F.linear(z, self.last.weight.float()) * self.window(length, device)


class Hyena(nn.Module):
    """The Hyena operator of order o; `forward` convolves by FFT, `step` decodes one token."""

    def __init__(self, d_model: int, order: int = 2, filter_dim: int = 64, pos_dim: int = 5,
                 short_conv: int = 3, reference_len: int = REFERENCE_LEN) -> None:
        super().__init__()
        if order < 2 or pos_dim < 3 or pos_dim % 2 == 0:
            raise ValueError(f"order={order} must be >= 2 and pos_dim={pos_dim} odd and >= 3")
        self.d_model, self.order, self.short_conv = d_model, order, short_conv
        wide = (order + 1) * d_model
        self.in_proj = nn.Linear(d_model, wide)
        # depthwise conv kept as a (channels, k) matrix, the layout the ops take
        self.short_conv_weight = nn.Parameter(torch.empty(wide, short_conv))
        self.short_conv_bias = nn.Parameter(torch.empty(wide))
        self.filter = ImplicitFilter(d_model, order - 1, filter_dim, pos_dim, reference_len)
        self.filter_bias = nn.Parameter(torch.empty((order - 1) * d_model))  # the skip term
        self.out_proj = nn.Linear(d_model, d_model)
        self._filter_cache: tuple | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.in_proj, self.out_proj):
            nn.init.normal_(linear.weight, std=1.0 / math.sqrt(linear.in_features))
            nn.init.zeros_(linear.bias)
        bound = 1.0 / math.sqrt(self.short_conv)  # nn.Conv1d's default for a depthwise conv
        nn.init.uniform_(self.short_conv_weight, -bound, bound)
        nn.init.uniform_(self.short_conv_bias, -bound, bound)
        for linear in (self.filter.first, self.filter.hidden, self.filter.last):
            linear.reset_parameters()
        nn.init.constant_(self.filter.act1.freq, SIN_FREQ_INIT)
        nn.init.constant_(self.filter.act2.freq, SIN_FREQ_INIT)
        nn.init.normal_(self.filter_bias)
        self._filter_cache = None

    def _streams(self, z: Tensor) -> tuple[list[Tensor], Tensor]:
        """Short-conv output (..., (o+1)d) -> the gates [x_0 .. x_{o-1}] and v, each (..., d)."""
        *gates, v = z.split(self.d_model, dim=-1)
        return gates, v

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, N, d) -> (B, N, d)."""
        length, d, n_filters = x.shape[1], self.d_model, self.order - 1
        gates, v = self._short_conv_streams(x)  # (B, N, d) each
        h = self.filter(length, x.device).view(length, n_filters, d)  # fp32
        bias = self.filter_bias.view(n_filters, d)
        for i in range(1, self.order):
            v = fft_long_conv(v * gates[i], h[:, i - 1], bias[i - 1])
        return self.out_proj(v * gates[0])

    def _short_conv_streams(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """in_proj and the short conv over segments of the sequence (`over_segments`, the conv
        window carried from one to the next), so that the (o+1)d-wide tensors stay within the
        temporary budget; each stream is then joined over the whole sequence."""
        pieces = over_segments(x, 4 * x.shape[0] * (self.order + 1) * self.d_model,
                               self._short_conv_segment)
        gates = [join_segments([p[0][i] for p in pieces]) for i in range(self.order)]
        return gates, join_segments([p[1] for p in pieces])

    def _short_conv_segment(self, x: Tensor, conv: Tensor | None
                            ) -> tuple[tuple[list[Tensor], Tensor], Tensor]:
        z, conv = causal_conv1d(self.in_proj(x), self.short_conv_weight, self.short_conv_bias,
                                state=conv, return_state=True)
        return self._streams(z), conv

    def init_state(self, batch: int, max_len: int, device=None, dtype=None) -> State:
        """Zero short-conv window and long-conv histories of `max_len` inputs, position 0."""
        device = device or self.filter_bias.device
        dtype = dtype or self.filter_bias.dtype
        wide = (self.order + 1) * self.d_model
        return {
            "conv": torch.zeros(batch, wide, self.short_conv - 1, device=device, dtype=dtype),
            "history": torch.zeros(batch, self.order - 1, max_len, self.d_model, device=device,
                                   dtype=dtype),
            "pos": 0,
        }

    def _decoding_filter(self, length: int, device) -> Tensor:
        """The filter for `step`, (length, (o-1)d) fp32. Recomputing the MLP over every position
        costs ~filter_dim times the long conv itself at each step, so without gradients it is
        cached on the module, keyed by length, device and the identity and version counter of
        each filter weight (an optimizer step, load_state_dict or .to() changes the key)."""
        if torch.is_grad_enabled():  # the cache holds no graph: gradients need a fresh filter
            return self.filter(length, device)
        key = (length, str(device),
               tuple((p.data_ptr(), p._version) for p in self.filter.parameters()))
        if self._filter_cache is None or self._filter_cache[0] != key:
            self._filter_cache = (key, self.filter(length, device))
        return self._filter_cache[1]

    def step(self, x_t: Tensor, state: State) -> tuple[Tensor, State]:
        """x_t: (B, d) -> (y_t: (B, d), state); y_t = sum_{s<=t} h[t-s] u_s over the history,
        the same sums `forward` computes by FFT. Writes the history in place."""
        pos, history = state["pos"], state["history"]
        n_filters, max_len, d = history.shape[1:]
        if pos >= max_len:
            raise ValueError(f"decoding position {pos} is past the state's max_len={max_len}")
        z, conv = causal_conv1d_step(self.in_proj(x_t), state["conv"], self.short_conv_weight,
                                     self.short_conv_bias)
        gates, v = self._streams(z)  # (B, d) each
        taps = self._decoding_filter(max_len, x_t.device)[: pos + 1].flip(0)  # h[t-s], s = 0..t
        taps = taps.view(pos + 1, n_filters, d)
        bias = self.filter_bias.float().view(n_filters, d)
        for i in range(1, self.order):
            u = v * gates[i]  # (B, d)
            history[:, i - 1, pos] = u
            past = history[:, i - 1, : pos + 1].float()  # (B, t+1, d)
            conv_out = torch.einsum("bsd,sd->bd", past, taps[:, i - 1])
            v = (conv_out + bias[i - 1] * u.float()).to(x_t.dtype)
        y_t = self.out_proj(v * gates[0])
        return y_t, {"conv": conv.to(state["conv"].dtype), "history": history, "pos": pos + 1}
