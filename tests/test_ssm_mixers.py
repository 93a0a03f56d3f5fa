"""Mamba (M) and Mamba-2 (M2): the blocks against references built from their own parameters
with the naive sequential ops, the cost model's counts, Mamba's initialisations, step decoding,
long sequences and gradients. The registry-wide contract is in test_mixers.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from search_spaces import ArchConfig
from search_spaces.cost.ssm import mamba as mamba_cost
from search_spaces.cost.ssm import mamba2 as mamba2_cost
from trials.builder import mixer_kwargs
from trials.mixers.mamba import Mamba
from trials.mixers.mamba2 import Mamba2
from kernel_parity import assert_native_equals_fallback
from trials.ops import naive_selective_scan, naive_ssd

KINDS = {"M": Mamba, "M2": Mamba2}
SMALL = {"d_model": 32, "d_state": 8, "m2_d_state": 8, "m2_head_dim": 16}


def build(kind: str, seed: int = 0, **dims):
    arch = ArchConfig.from_pattern(kind, **{**SMALL, **dims})
    torch.manual_seed(seed)
    return arch, KINDS[kind](**mixer_kwargs(arch, arch.layers[0]))


def randn(*shape, seed: int = 1, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def reference_conv(x, weight, bias):
    """Causal depthwise conv through F.conv1d, independent of trials.ops: x (B, L, C)."""
    k = weight.shape[1]
    out = F.conv1d(x.transpose(1, 2), weight[:, None, :], bias, padding=k - 1,
                   groups=weight.shape[0])
    return out[..., : x.shape[1]].transpose(1, 2)


def mamba_reference(m: Mamba, x):
    """Mamba-1 written out from its parameters, with the sequential scan."""
    R, N = m.dt_rank, m.d_state
    x_in, z = (x @ m.in_proj.weight.T).chunk(2, dim=-1)
    x_in = F.silu(reference_conv(x_in, m.conv_weight, m.conv_bias))
    proj = x_in @ m.x_proj.weight.T
    dt = F.softplus(proj[..., :R] @ m.dt_proj.weight.T + m.dt_proj.bias)
    B, C = proj[..., R : R + N], proj[..., R + N :]
    y = naive_selective_scan(x_in, dt, -m.A_log.exp(), B, C, D=m.D, z=z)
    return y @ m.out_proj.weight.T


def mamba2_reference(m: Mamba2, x):
    """Mamba-2 written out from its parameters, with the sequential SSD."""
    batch, length, _ = x.shape
    di, GN, nh = m.d_inner, m.n_groups * m.d_state, m.n_heads
    proj = x @ m.in_proj.weight.T
    z, xBC, dt = proj[..., :di], proj[..., di : 2 * di + 2 * GN], proj[..., 2 * di + 2 * GN :]
    xBC = F.silu(reference_conv(xBC, m.conv_weight, m.conv_bias))
    x_in = xBC[..., :di].reshape(batch, length, nh, m.head_dim)
    B = xBC[..., di : di + GN].reshape(batch, length, m.n_groups, m.d_state)
    C = xBC[..., di + GN :].reshape(batch, length, m.n_groups, m.d_state)
    y = naive_ssd(x_in, F.softplus(dt + m.dt_bias), -m.A_log.exp(), B, C, D=m.D)
    gated = y.reshape(batch, length, di) * F.silu(z)
    # the gated norm's statistics per group of di/G channels, as mamba_ssm's and HF's Mamba-2
    grouped = gated.unflatten(-1, (m.n_groups, -1))
    normed = (grouped * torch.rsqrt(grouped.pow(2).mean(-1, keepdim=True) + m.norm.eps)).flatten(-2)
    return (normed * m.norm.weight) @ m.out_proj.weight.T


# 70 tokens crosses the ops' 64-token chunks; two groups exercise the head -> group mapping
@pytest.mark.parametrize("kind, reference, dims", [
    ("M", mamba_reference, {}),
    ("M2", mamba2_reference, {"m2_n_groups": 2}),
])
def test_block_equals_the_naive_reference(kind, reference, dims):
    _, m = build(kind, **dims)
    x = randn(2, 70, 32)
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference(m, x), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_segmented_forward_equals_one_segment_with_gradients(kind, monkeypatch):
    # with a 1-byte budget every segment is one chunk (32 or 64 tokens): over 200 tokens the
    # conv window and the SSM state cross 3 to 6 segment boundaries, gradients flow back
    import trials.ops._memory as memory

    _, m = build(kind, m2_n_groups=2)
    x = randn(2, 200, 32).requires_grad_()
    weights = randn(2, 200, 32, seed=2)
    outputs, grads = [], []
    for budget in (memory.TEMP_BYTES, 1):
        monkeypatch.setattr(memory, "TEMP_BYTES", budget)
        y = m(x)
        outputs.append(y)
        grads.append(torch.autograd.grad((y * weights).sum(), [x, *m.parameters()]))
    torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-4)
    for g1, g0 in zip(grads[1], grads[0]):
        torch.testing.assert_close(g1, g0, atol=1e-4, rtol=1e-4)


# every op of the block on its compiled CPU kernel (Mamba: the conv, dt_proj with its softplus,
# the scan; Mamba-2: the conv, softplus, the SSD, the silu gate, the norm) against the PyTorch
# fallback, forward and every gradient
@pytest.mark.parametrize("kind, ops", [
    ("M", ("causal_conv1d", "selective_scan", "softplus_linear")),
    ("M2", ("causal_conv1d", "glu", "rms_norm", "softplus", "ssd")),
])
def test_block_on_native_kernels_equals_the_fallback(kind, ops):
    _, m = build(kind)
    x = randn(2, 70, 32).requires_grad_()
    assert_native_equals_fallback(m, x, randn(2, 70, 32, seed=2), ops)


@pytest.mark.parametrize("kind, cost", [("M", mamba_cost), ("M2", mamba2_cost)])
@pytest.mark.parametrize("dims", [
    {"d_model": 32},
    {"d_model": 48, "d_state": 4, "d_conv": 3, "expand": 3, "dt_rank": 5, "m2_head_dim": 8,
     "m2_n_groups": 2},
])
def test_parameters_and_state_equal_the_cost_model(kind, cost, dims):
    arch, m = build(kind, **dims)
    expected = cost(arch, arch.layers[0], 100)
    assert sum(p.numel() for p in m.parameters()) == expected.params
    state = m.init_state(3, 100)
    assert sum(t.numel() for t in state.values()) == 3 * expected.stored


def test_mamba_initialisation():
    _, m = build("M", d_model=64, d_state=16)  # 128 channels
    n = torch.arange(1, 17, dtype=torch.float32)
    torch.testing.assert_close(m.A_log, n.log().expand(128, 16))
    assert torch.equal(m.D, torch.ones(128))
    dt = F.softplus(m.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001
    # log-uniform: both decades populated, the geometric mean near 1e-2
    assert dt.min() < 3e-3 and dt.max() > 3e-2
    assert 4e-3 < dt.log().mean().exp() < 2.5e-2
    bound = m.dt_rank ** -0.5
    assert m.dt_proj.weight.abs().max() <= bound and m.dt_proj.weight.std() > bound / 3


def test_mamba2_initialisation():
    _, m = build("M2", d_model=64, m2_head_dim=4)  # 32 heads
    A = m.A_log.exp()
    assert A.min() >= 1 and A.max() <= 16 and A.std() > 1
    assert torch.equal(m.D, torch.ones(32))
    dt = F.softplus(m.dt_bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 1e-1 * 1.001 and dt.max() / dt.min() > 5
    assert torch.equal(m.norm.weight, torch.ones(128))


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_step_equals_forward_over_30_tokens(kind):
    _, m = build(kind, m2_n_groups=2)
    x = randn(3, 30, 32)
    with torch.no_grad():
        parallel = m(x)
        state = m.init_state(3, 30)
        outputs = []
        for t in range(30):
            y_t, state = m.step(x[:, t], state)
            outputs.append(y_t)
    torch.testing.assert_close(torch.stack(outputs, dim=1), parallel, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bf16_is_close_to_fp32_and_keeps_its_dtype(kind):
    _, m = build(kind)
    x = randn(2, 40, 32)
    with torch.no_grad():
        full = m(x)
        half = m.to(torch.bfloat16)(x.bfloat16())
        state = m.init_state(2, 40, dtype=torch.bfloat16)
        y_t, state = m.step(x[:, 0].bfloat16(), state)
    assert half.dtype == y_t.dtype == torch.bfloat16
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    assert (half.float() - full).abs().max() < 0.05 * full.abs().max()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_long_sequence_is_finite(kind):
    _, m = build(kind)
    x = randn(1, 2048, 32)
    y = m(x)
    y.pow(2).mean().backward()
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    # the state must not have faded to nothing: the last tokens still see a mixed signal
    assert y[0, -100:].std() > 1e-3


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_gradient_reaches_every_parameter(kind):
    _, m = build(kind, m2_n_groups=2)
    m(randn(2, 24, 32)).pow(2).mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_dt_rank_defaults_like_the_config():
    assert Mamba(d_model=40).dt_rank == math.ceil(40 / 16)
