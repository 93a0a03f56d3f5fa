"""Griffin's recurrent block (R) and Hyena (H) against references written out here.

The conformance suite (test_mixers.py) checks the contract on tiny defaults; these tests check
the maths: the RG-LRU against a per-step loop with dense gates, Hyena against an O(N^2) Toeplitz
convolution, the init ranges, the decay window, and decoding past non-default widths and orders.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from search_spaces import ArchConfig
from search_spaces.cost.hyena import hyena as hyena_cost
from search_spaces.cost.recurrent import rglru_block as rglru_cost
from trials.builder import mixer_kwargs
from trials.mixers.hyena import Hyena
from trials.mixers.rglru import RecurrentBlock
from kernel_parity import assert_native_equals_fallback

R_DIMS = dict(d_model=24, lru_width=32, n_heads=4, d_conv=3)
H_DIMS = dict(d_model=16, hyena_order=3, hyena_filter_dim=12, hyena_pos_dim=7,
              hyena_short_conv=4)


def build(letter: str, dims: dict, seed: int = 0):
    arch = ArchConfig.from_pattern(letter, **dims)
    layer = arch.layers[0]
    torch.manual_seed(seed)
    cls = RecurrentBlock if letter == "R" else Hyena
    return arch, layer, cls(**mixer_kwargs(arch, layer))


def randn(*shape, seed: int = 1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def naive_causal_conv(x, weight, bias):
    """x (B, N, C), weight (C, k): y_t = sum_j weight[:, j] * x_{t-(k-1)+j} + bias."""
    k = weight.shape[1]
    padded = F.pad(x, (0, 0, k - 1, 0))  # zeros before the first token
    taps = [padded[:, j : j + x.shape[1]] * weight[:, j] for j in range(k)]
    return torch.stack(taps).sum(0) + bias


def naive_recurrent_block(block: RecurrentBlock, x):
    """Griffin's block written step by step, with the gates as dense block-diagonal matrices."""
    gate = F.gelu(block.linear_y(x))
    u = naive_causal_conv(block.linear_x(x), block.conv_weight, block.conv_bias)
    w_a = torch.block_diag(*block.gate_a.weight)  # (w, w)
    w_x = torch.block_diag(*block.gate_x.weight)
    base = torch.sigmoid(block.a_param)  # a = sigmoid(Lambda), a_t = a ** (8 * r_t)
    h = torch.zeros_like(u[:, 0])
    states = []
    for t in range(x.shape[1]):
        r = torch.sigmoid(u[:, t] @ w_a + block.gate_a.bias)
        i = torch.sigmoid(u[:, t] @ w_x + block.gate_x.bias)
        a = base ** (8.0 * r)
        h = a * h + torch.sqrt(1 - a**2) * (i * u[:, t])
        states.append(h)
    return block.linear_out(gate * torch.stack(states, dim=1))


def naive_hyena(mixer: Hyena, x):
    """Hyena with every long convolution as a dense causal Toeplitz matrix product."""
    length, d, order = x.shape[1], mixer.d_model, mixer.order
    z = naive_causal_conv(mixer.in_proj(x), mixer.short_conv_weight, mixer.short_conv_bias)
    *gates, v = z.split(d, dim=-1)
    h = mixer.filter(length, x.device).view(length, order - 1, d)
    bias = mixer.filter_bias.view(order - 1, d)
    lag = torch.arange(length)[:, None] - torch.arange(length)[None, :]  # t - s
    for i in range(1, order):
        toeplitz = h[lag.clamp_min(0), i - 1] * (lag >= 0)[..., None]  # (t, s, d): h[t-s], s<=t
        u = v * gates[i]
        v = torch.einsum("tsd,bsd->btd", toeplitz, u) + bias[i - 1] * u
    return mixer.out_proj(v * gates[0])


def decode(mixer, x, max_len):
    state = mixer.init_state(x.shape[0], max_len, dtype=x.dtype)
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = mixer.step(x[:, t], state)
        outputs.append(y_t)
    return torch.stack(outputs, dim=1)


def test_rglru_block_equals_a_per_step_reference():
    _, _, block = build("R", R_DIMS)
    x = randn(2, 17, R_DIMS["d_model"])
    with torch.no_grad():
        torch.testing.assert_close(block(x), naive_recurrent_block(block, x), atol=1e-5, rtol=1e-4)


def test_rglru_block_on_native_kernels_equals_the_fallback():
    """Every op of the block on its compiled CPU kernel (the conv, the gates' blocks and
    arithmetic, the scan) against the PyTorch fallback, forward and every gradient; lru_width
    32 is two whole fp32 vectors, its 4 gate blocks 8 wide (half a vector)."""
    _, _, block = build("R", R_DIMS)
    x = randn(2, 40, R_DIMS["d_model"]).requires_grad_()
    weights = randn(2, 40, R_DIMS["d_model"], seed=2)
    assert_native_equals_fallback(block, x, weights, ("block_diagonal_linear", "causal_conv1d",
                                                      "linear_scan", "rglru_gates"))


def test_rglru_decay_at_init_spans_the_griffin_range():
    _, _, block = build("R", dict(R_DIMS, lru_width=512, n_heads=8))
    a = torch.sigmoid(block.a_param.detach())
    assert a.min() >= 0.9 and a.max() <= 0.999
    assert a.min() < 0.92 and a.max() > 0.98  # spread over the range, not one value


def test_hyena_long_convolutions_equal_a_direct_sum():
    _, _, mixer = build("H", H_DIMS)
    x = randn(2, 37, H_DIMS["d_model"])
    with torch.no_grad():
        torch.testing.assert_close(mixer(x), naive_hyena(mixer, x), atol=1e-5, rtol=1e-4)


def test_hyena_native_kernels_equal_the_fallback():
    _, _, mixer = build("H", H_DIMS)
    x = randn(2, 37, H_DIMS["d_model"]).requires_grad_()
    weights = randn(2, 37, H_DIMS["d_model"], seed=2)
    assert_native_equals_fallback(mixer, x, weights, ("causal_conv1d", "fft_long_conv"))


def test_hyena_filter_decays_along_the_sequence():
    _, _, mixer = build("H", H_DIMS)
    length = mixer.filter.reference_len
    with torch.no_grad():
        window = mixer.filter.window(length, "cpu")
        h = mixer.filter(length, "cpu").abs()
    assert torch.all(window[0] == 1) and torch.all(window[1:] < window[:-1])
    assert window[-1].max() < 0.05
    assert h[-64:].mean() < 0.2 * h[:64].mean()


@pytest.mark.parametrize("letter,dims,cost", [("R", R_DIMS, rglru_cost), ("H", H_DIMS, hyena_cost),
                                               ("H", dict(d_model=8), hyena_cost)])
def test_parameters_equal_the_cost_model(letter, dims, cost):
    arch, layer, mixer = build(letter, dims)
    assert sum(p.numel() for p in mixer.parameters()) == cost(arch, layer, 1).params


@pytest.mark.parametrize("letter,dims", [("R", R_DIMS), ("H", H_DIMS)])
def test_step_decoding_equals_forward_over_40_tokens(letter, dims):
    _, _, mixer = build(letter, dims)
    x = randn(2, 40, dims["d_model"])
    with torch.no_grad():
        # max_len above the length: decoding must not depend on how much room the state has
        torch.testing.assert_close(decode(mixer, x, max_len=53), mixer(x), atol=1e-5, rtol=1e-4)


def test_hyena_decoding_filter_follows_weight_updates():
    _, _, mixer = build("H", H_DIMS)
    x = randn(1, 6, H_DIMS["d_model"])
    with torch.no_grad():
        decode(mixer, x, max_len=6)  # fills the cached filter
        mixer.filter.last.weight.mul_(-2.0)  # an in-place update, as an optimizer makes
        torch.testing.assert_close(decode(mixer, x, max_len=6), mixer(x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("letter,dims", [("R", R_DIMS), ("H", H_DIMS)])
def test_gradients_reach_every_parameter(letter, dims):
    _, _, mixer = build(letter, dims)
    mixer(randn(2, 19, dims["d_model"])).square().mean().backward()
    for name, parameter in mixer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("letter,dims", [("R", R_DIMS), ("H", H_DIMS)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_long_sequence_stays_finite(letter, dims, dtype):
    _, _, mixer = build(letter, dims)
    mixer = mixer.to(dtype)
    x = randn(1, 2048, dims["d_model"]).to(dtype).requires_grad_()
    y = mixer(x)
    y.float().square().mean().backward()
    assert y.dtype == dtype and torch.isfinite(y.float()).all()
    assert torch.isfinite(x.grad.float()).all()
