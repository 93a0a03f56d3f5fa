"""Causal convolutions over (B, L, C) sequences: a short depthwise conv and an FFT long conv.

Shape legend: B batch, L length, C channels, K kernel width.

`causal_conv1d` is the short depthwise conv in front of Mamba, Mamba-2, RG-LRU and Hyena
mixers: y_t = sum_j weight[:, j] * x_{t-K+1+j} + bias (the last tap multiplies the current
input). Its decoding state is the last K-1 inputs, (B, C, K-1), oldest first; passing it as
`state` continues a sequence exactly where the previous call stopped. Its fast path keeps the
(B, L, C) layout throughout (oneDNN's channels-last depthwise kernel, no transposed copies) and
has its own backward pass; on the CPU (fp32, fp64) a compiled kernel (`trials.ops.native`)
runs it instead, with the mixers' silu fused in, and on CUDA the causal_conv1d library's
`causal_conv1d_fn` when it is installed (`_dao_conv`; widths 2-4 and channels divisible by 8,
its limits: other calls run the PyTorch path). `trials.ops.dispatch` holds the rule.
`naive_causal_conv1d` is the window-sum reference.

`fft_long_conv` is Hyena's long conv with a filter as long as the sequence:
y_t = sum_{s <= t} h_{t-s} u_s + bias * u_t, computed as a product of spectra in O(L log L).
Zero padding to n >= L + len(h) - 1 (about 2L; n is rounded up to a size whose only prime
factors are 2, 3 and 5, which FFTs handle fastest) makes the circular convolution linear.
On the CPU (fp32, fp64) the compiled kernel sums the products directly instead, up to
DIRECT_LONG_CONV_MAX_LENGTH steps: O(L^2) per channel, but without the padding, strided copies
and complex buffers that make the FFT's cost at the proxies' lengths.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from trials.ops import dispatch, native
from trials.ops._memory import blocks
from trials.ops._precision import autocast_off, compute_dtype, full_precision, upcast


CAUSAL_CONV1D = dispatch.Fused("causal_conv1d", "causal_conv1d", "causal_conv1d_fn")
dispatch.register("causal_conv1d", native=True, fused=CAUSAL_CONV1D)
dispatch.register("fft_long_conv", native=True)
# The longest sequence whose long conv the native kernel sums directly (O(L^2) products per
# channel); longer ones take the FFT. Forward + backward, 64 channels, one thread, FFT time over
# direct: 6.9 at L 64, 4.5 at 256, 1.6 at 1024, 1.33 at 1536, 0.92 at 2048 (benchmarks/README.md).
DIRECT_LONG_CONV_MAX_LENGTH = 1536


class _DepthwiseConv(torch.autograd.Function):
    """y[:, t] = bias + sum_j weight[:, j] * xp[:, t + j]: a "valid" depthwise conv over time.

    xp: (B, L+K-1, C) the input with its K-1 earlier steps in front; weight: (C, K); bias: (C,)
    or None. Returns (B, L, C).

    The (B, L, C) tensors are handed to the 2-D convolution as (B, C, 1, L) views, whose
    strides are channels-last, so no transposed copy is ever made, and oneDNN's channels-last
    depthwise kernel runs on them. The backward pass takes only the input gradient from the
    convolution backward (its weight and bias gradients reduce over a strided layout and cost
    several times more) and reduces the weight gradient itself, over blocks of time.
    """

    @staticmethod
    def forward(ctx, xp: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        channels = weight.shape[0]
        y = F.conv2d(_as_image(xp), weight[:, None, None, :], bias, groups=channels)
        ctx.save_for_backward(xp, weight)
        ctx.has_bias = bias is not None
        return _from_image(y)

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        with autocast_off(grad_y.device):
            xp, weight = ctx.saved_tensors
            channels, width = weight.shape
            grad_y = grad_y.contiguous()
            grad_xp = None
            if ctx.needs_input_grad[0]:
                grad_xp = torch.ops.aten.convolution_backward(
                    _as_image(grad_y), _as_image(xp), weight[:, None, None, :], None,
                    [1, 1], [0, 0], [1, 1], False, [0, 0], channels, [True, False, False])[0]
                grad_xp = _from_image(grad_xp)
            grad_w = _weight_grad(grad_y, xp, width) if ctx.needs_input_grad[1] else None
            grad_b = grad_y.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[2] else None
            return grad_xp, grad_w, grad_b


def _as_image(t: Tensor) -> Tensor:
    """(B, L, C) -> a (B, C, 1, L) view (channels-last strides when t is contiguous)."""
    return t.transpose(1, 2)[:, :, None, :]


def _from_image(t: Tensor) -> Tensor:
    """(B, C, 1, L) -> a (B, L, C) view (contiguous when t is channels-last)."""
    return t[:, :, 0, :].transpose(1, 2)


WEIGHT_GRAD_BLOCK = 1 << 18  # elements per (B, T, C) block: the product stays in cache


def _weight_grad(grad_y: Tensor, xp: Tensor, width: int) -> Tensor:
    """dL/dweight[c, j] = sum_{b, t} grad_y[b, t, c] * xp[b, t + j, c], (C, K)."""
    batch, length, channels = grad_y.shape
    grad_w = grad_y.new_zeros(width, channels)
    block = max(1, WEIGHT_GRAD_BLOCK // (batch * channels))
    work = grad_y.new_empty(batch, min(block, length), channels)
    for start in range(0, length, block):
        end = min(start + block, length)
        g, w = grad_y[:, start:end], work[:, : end - start]
        for j in range(width):
            grad_w[j] += torch.mul(g, xp[:, start + j : end + j], out=w).sum((0, 1))
    return grad_w.t()


class _NativeDepthwiseConv(torch.autograd.Function):
    """The causal conv (and the silu after it, when asked) on the compiled CPU kernel
    (`native`), one pass over each sequence vectorised over channels.

    x: (B, L, C); history: (B, K-1, C) the inputs before x; weight: (C, K); bias: (C,) or None.
    Returns (B, L, C). The backward pass recomputes the pre-activation rather than keeping it.
    """

    @staticmethod
    def forward(ctx, x: Tensor, history: Tensor, weight: Tensor, bias: Tensor | None,
                silu: bool) -> Tensor:
        batch, length, channels = x.shape
        w_t = weight.t().contiguous()  # (K, C)
        y = torch.empty_like(x)
        native.entry("causal_conv_fwd", x)(
            *map(native.pointer, (x, history, w_t, bias, y)),
            batch, length, channels, w_t.shape[0], int(silu), torch.get_num_threads())
        ctx.silu = silu
        ctx.save_for_backward(x, history, w_t, bias)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        x, history, w_t, bias = ctx.saved_tensors
        batch, length, channels = x.shape
        width = w_t.shape[0]
        grad_x = torch.empty_like(x)
        grad_history = torch.empty_like(history) if ctx.needs_input_grad[1] else None
        grad_w_parts = x.new_empty(batch, width, channels)
        grad_b_parts = x.new_empty(batch, channels)
        grad_y = grad_y.contiguous()  # held here: the kernel reads it after map() lets go
        native.entry("causal_conv_bwd", x)(
            *map(native.pointer, (x, history, w_t, bias, grad_y, grad_x,
                                  grad_history, grad_w_parts, grad_b_parts)),
            batch, length, channels, width, int(ctx.silu), torch.get_num_threads())
        grad_b = grad_b_parts.sum(0) if bias is not None else None
        return grad_x, grad_history, grad_w_parts.sum(0).t(), grad_b, None


def _dao_conv_fits(x: Tensor, weight: Tensor) -> bool:
    """causal_conv1d's limits on the channels-last layout used here (its C++ checks)."""
    return 2 <= weight.shape[1] <= 4 and x.shape[2] % 8 == 0


def _dao_conv(x: Tensor, history: Tensor | None, weight: Tensor, bias: Tensor | None,
              silu: bool) -> Tensor:
    """y (B, L, C) from `causal_conv1d_fn(x, weight, bias, initial_states=, activation=)`, which
    takes x (B, C, L): our contiguous (B, L, C) transposed is its channels-last layout, the one
    that accepts initial states, given as (B, C, K-1) with the channels contiguous too."""
    initial = None if history is None else history.contiguous().transpose(1, 2)
    conv = dispatch.fused_function(CAUSAL_CONV1D)
    y = conv(x.transpose(1, 2), weight.contiguous(), bias, initial_states=initial,
             activation="silu" if silu else None)
    return y.transpose(1, 2)


@full_precision
def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    state: Tensor | None = None,
    return_state: bool = False,
    silu: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Depthwise causal conv. x: (B, L, C); weight: (C, K); bias: (C,); state: (B, C, K-1).

    Returns y (B, L, C) in x's dtype, passed through silu when `silu` (the mixers' activation,
    fused into the conv where a kernel allows), and, with `return_state`, the new state
    (B, C, K-1): the last K-1 inputs, including those of `state` when the sequence is shorter
    than K-1.
    """
    width = weight.shape[1]
    dtype = compute_dtype(x, weight, bias, state)
    x_c = x.to(dtype).contiguous()
    kernel = dispatch.kernel_for("causal_conv1d", x_c, fused_fits=_dao_conv_fits(x_c, weight))
    dao = kernel == CAUSAL_CONV1D.name
    if kernel == dispatch.NATIVE or dao:
        history = (x_c.new_zeros(x.shape[0], width - 1, x.shape[2]) if state is None
                   else state.to(dtype).transpose(1, 2).contiguous())
        if dao:
            y = _dao_conv(x_c, None if state is None else history, weight.to(dtype),
                          upcast(bias, dtype), silu)
        else:
            y = _NativeDepthwiseConv.apply(x_c, history, weight.to(dtype), upcast(bias, dtype),
                                           silu)
        if return_state:
            xp = torch.cat([history, x_c], dim=1) if x.shape[1] < width - 1 else x_c
            return y.to(x.dtype), xp[:, xp.shape[1] - (width - 1):].transpose(1, 2).to(x.dtype)
        return y.to(x.dtype)
    if state is None:
        xp = F.pad(x_c, (0, 0, width - 1, 0))  # (B, K-1+L, C)
    else:
        xp = torch.cat([state.to(dtype).transpose(1, 2), x_c], dim=1)
    y = _DepthwiseConv.apply(xp, weight.to(dtype), upcast(bias, dtype))
    y = (F.silu(y) if silu else y).to(x.dtype)
    if return_state:
        return y, xp[:, xp.shape[1] - (width - 1) :].transpose(1, 2).to(x.dtype)
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
    silu: bool = False,
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
    y = torch.stack(ys, dim=1)
    y = (F.silu(y) if silu else y).to(x.dtype)
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


class _NativeLongConv(torch.autograd.Function):
    """y_t = sum_{k <= t} h_k u_{t-k}, summed directly on the compiled CPU kernel (`native`),
    vectorised over channels. u: (B, L, C), h: (L, C), both contiguous, one float dtype."""

    @staticmethod
    def forward(ctx, u: Tensor, h: Tensor) -> Tensor:
        batch, length, channels = u.shape
        y = torch.empty_like(u)
        native.entry("long_conv_fwd", u)(*map(native.pointer, (u, h, y)), batch, length,
                                         channels, torch.get_num_threads())
        ctx.save_for_backward(u, h)
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor):
        u, h = ctx.saved_tensors
        batch, length, channels = u.shape
        threads = torch.get_num_threads()
        grad_u = torch.empty_like(u)
        grad_h_parts = u.new_empty(threads, length, channels)
        grad_y = grad_y.contiguous()  # held here: the kernel reads it after map() lets go
        native.entry("long_conv_bwd", u)(
            *map(native.pointer, (u, h, grad_y, grad_u, grad_h_parts)),
            batch, length, channels, threads)
        return grad_u, grad_h_parts.sum(0)


@full_precision
def fft_long_conv(u: Tensor, h: Tensor, bias: Tensor | None = None) -> Tensor:
    """Causal long conv. u: (B, L, C); h: (L_h, C), taps beyond L ignored; bias: (C,).

    Returns y (B, L, C) in u's dtype; computed in fp32 (fp64 kept). By FFT, except on the CPU
    with the native kernels up to DIRECT_LONG_CONV_MAX_LENGTH steps, where the sum is taken
    directly (same result to rounding; the bias is folded into the first tap).
    """
    batch, length, channels = u.shape
    dtype = compute_dtype(u, h, bias)
    u_c, h_c = u.to(dtype), h.to(dtype)[:length]
    kernel = dispatch.kernel_for("fft_long_conv", u_c,
                                 native_fits=length <= DIRECT_LONG_CONV_MAX_LENGTH)
    if kernel == dispatch.NATIVE:
        taps = F.pad(h_c, (0, 0, 0, length - h_c.shape[0]))  # (L, C)
        if bias is not None:  # bias * u_t is one more term of the first tap's
            taps = torch.cat([taps[:1] + bias.to(dtype), taps[1:]])
        return _NativeLongConv.apply(u_c.contiguous(), taps.contiguous()).to(u.dtype)
    if batch == 0:  # MKL's FFT rejects an empty batch: one zero sequence, cut off at the end
        u_c = torch.cat([u_c, u_c.new_zeros(1, length, channels)])
    n = fft_size(length + h_c.shape[0] - 1)
    filter_spectrum = torch.fft.rfft(h_c, n=n, dim=0)  # (n/2+1, C)
    # over blocks of the batch, so that the padded input, its spectrum and the backward's
    # full complex buffer (n, C) per sequence stay within the temporary budget (`_memory`)
    ys = [torch.fft.irfft(torch.fft.rfft(u_c[start:end], n=n, dim=1) * filter_spectrum,
                          n=n, dim=1)[:, :length]
          for start, end in blocks(u_c.shape[0], 8 * n * channels)]
    y = ys[0] if len(ys) == 1 else torch.cat(ys, dim=0)
    if bias is not None:
        y = y + u_c * bias.to(dtype)
    return y[:batch].to(u.dtype)


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
