"""Causal convolutions over (B, L, C) sequences: a short depthwise conv and an FFT long conv.

Shape legend: B batch, L length, C channels, K kernel width.

`causal_conv1d` is the short depthwise conv in front of Mamba, Mamba-2, RG-LRU and Hyena
mixers: y_t = sum_j weight[:, j] * x_{t-K+1+j} + bias (the last tap multiplies the current
input). Its decoding state is the last K-1 inputs, (B, C, K-1), oldest first; passing it as
`state` continues a sequence exactly where the previous call stopped.

`fft_long_conv` is Hyena's long conv with a filter as long as the sequence:
y_t = sum_{s <= t} h_{t-s} u_s + bias * u_t, computed as a product of spectra in O(L log L).
Zero padding to n >= L + len(h) - 1 (about 2L; n is rounded up to a size whose only prime
factors are 2, 3 and 5, which FFTs handle fastest) makes the circular convolution linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trials.ops._precision import compute_dtype, full_precision, upcast


@full_precision
def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    state: Tensor | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Depthwise causal conv. x: (B, L, C); weight: (C, K); bias: (C,); state: (B, C, K-1).

    Returns y (B, L, C) in x's dtype and, with `return_state`, the new state (B, C, K-1): the
    last K-1 inputs, including those of `state` when the sequence is shorter than K-1.
    """
    channels, width = weight.shape
    dtype = compute_dtype(x, weight, bias, state)
    xt = x.to(dtype).transpose(1, 2)  # (B, C, L)
    if state is None:
        xt = F.pad(xt, (width - 1, 0))
    else:
        xt = torch.cat([state.to(dtype), xt], dim=2)
    w = weight.to(dtype)[:, None, :]  # (C, 1, K)
    y = F.conv1d(xt, w, upcast(bias, dtype), groups=channels)  # (B, C, L)
    y = y.transpose(1, 2).to(x.dtype)
    if return_state:
        return y, xt[:, :, xt.shape[2] - (width - 1) :].to(x.dtype)
    return y


@full_precision
def causal_conv1d_step(
    x_t: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One decoding step. x_t: (B, C); conv_state: (B, C, K-1). Returns (y_t (B, C), new state)."""
    dtype = compute_dtype(x_t, conv_state, weight, bias)
    window = torch.cat([conv_state.to(dtype), x_t.to(dtype)[:, :, None]], dim=2)  # (B, C, K)
    y = (window * weight.to(dtype)).sum(-1)
    if bias is not None:
        y = y + bias.to(dtype)
    return y.to(x_t.dtype), window[:, :, 1:].to(conv_state.dtype)


@full_precision
def naive_causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    state: Tensor | None = None,
    return_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Reference for `causal_conv1d`: an explicit window sum at every step."""
    batch, length, channels = x.shape
    width = weight.shape[1]
    dtype = compute_dtype(x, weight, bias, state)
    w = weight.to(dtype)
    if state is None:
        history = x.new_zeros(batch, width - 1, channels, dtype=dtype)
    else:
        history = state.to(dtype).transpose(1, 2)
    seq = torch.cat([history, x.to(dtype)], dim=1)  # (B, K-1+L, C)
    ys = []
    for t in range(length):
        window = seq[:, t : t + width]  # (B, K, C), oldest first
        y_t = (window * w.t()).sum(1)
        ys.append(y_t if bias is None else y_t + bias.to(dtype))
    y = torch.stack(ys, dim=1).to(x.dtype)
    if return_state:
        return y, seq[:, seq.shape[1] - (width - 1) :].transpose(1, 2).to(x.dtype)
    return y


def fft_size(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = max(n, 1)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


@full_precision
def fft_long_conv(u: Tensor, h: Tensor, bias: Tensor | None = None) -> Tensor:
    """Causal long conv by FFT. u: (B, L, C); h: (L_h, C), taps beyond L ignored; bias: (C,).

    Returns y (B, L, C) in u's dtype; computed in fp32 (fp64 kept).
    """
    length = u.shape[1]
    dtype = compute_dtype(u, h, bias)
    h_c = h.to(dtype)[:length]
    n = fft_size(length + h_c.shape[0] - 1)
    u_c = u.to(dtype)
    spectrum = torch.fft.rfft(u_c, n=n, dim=1) * torch.fft.rfft(h_c, n=n, dim=0)
    y = torch.fft.irfft(spectrum, n=n, dim=1)[:, :length]
    if bias is not None:
        y = y + u_c * bias.to(dtype)
    return y.to(u.dtype)


@full_precision
def naive_long_conv(u: Tensor, h: Tensor, bias: Tensor | None = None) -> Tensor:
    """Direct O(L^2) reference for `fft_long_conv`."""
    length = u.shape[1]
    dtype = compute_dtype(u, h, bias)
    u_c = u.to(dtype)
    h_c = F.pad(h.to(dtype)[:length], (0, 0, 0, max(0, length - h.shape[0])))
    ys = [(h_c[: t + 1].flip(0) * u_c[:, : t + 1]).sum(1) for t in range(length)]
    y = torch.stack(ys, dim=1)
    if bias is not None:
        y = y + u_c * bias.to(dtype)
    return y.to(u.dtype)
