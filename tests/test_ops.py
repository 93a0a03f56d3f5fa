"""Every fast op in trials.ops against its naive sequential reference.

For each op: outputs, final state and the gradient of every float input agree with the reference
(fp32, relative tolerance 1e-4); odd lengths that are not a multiple of the chunk; with and
without an initial state; two calls chained through the returned state equal one call; long
sequences with steep decays stay finite and still agree; bf16 in, bf16 out. The custom autograd
functions are also checked against finite differences in fp64.

Every test here runs twice: with the compiled CPU kernels (`trials.ops.native`) and with them
switched off, so that both the native path and the PyTorch fallback are held to the references.
"""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from trials.ffn.mlp import ACTIVATIONS
from trials.norm import RMSNorm
from trials.ops import (
    add_rms_norm,
    block_diagonal_linear,
    causal_attention,
    causal_conv1d,
    causal_conv1d_step,
    fft_long_conv,
    glu,
    linear_scan,
    naive_block_diagonal_linear,
    naive_causal_attention,
    naive_causal_conv1d,
    naive_glu,
    naive_linear_scan,
    naive_long_conv,
    naive_rglru_gates,
    naive_selective_scan,
    naive_softplus_linear,
    naive_ssd,
    naive_add_rms_norm,
    naive_rms_norm,
    rglru_gates,
    rms_norm,
    selective_scan,
    selective_scan_step,
    softplus,
    softplus_linear,
    ssd,
)
from trials.ops import block_diagonal, dispatch, native, step_size
from trials.ops.conv import fft_size
from trials.ops.rotary import apply_rope, rope_tables, rotate_heads
from trials.ops.scan import reverse_scan_, scan_

TOL = 1e-4
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True, params=[native.NATIVE, native.PYTORCH])
def kernels(request):
    """Each test once per implementation of the ops on the CPU."""
    if request.param == native.PYTORCH:
        with native.disabled():
            yield request.param
    else:
        assert native.library() is not None, f"native kernels did not build: {native.failure()}"
        yield request.param


# ---------------------------------------------------------------------------------- helpers


def assert_close(actual: Tensor, expected: Tensor, tol: float = TOL, what: str = "value"):
    """max |actual - expected| <= tol * max(1, max |expected|), and everything finite."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert torch.isfinite(actual).all(), f"{what}: not finite"
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    err = (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} * {scale:.3g}"


def outputs_and_grads(fn, inputs: dict[str, Tensor | None], forward_context=None):
    """Run fn(**inputs); return its outputs and d(sum of outputs * fixed noise)/d(each input)."""
    with forward_context or contextlib.nullcontext():
        outs = fn(**inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    gen = torch.Generator().manual_seed(1)
    loss = sum((o.float() * torch.randn(o.shape, generator=gen)).sum() for o in outs)
    leaves = {k: v for k, v in inputs.items() if isinstance(v, Tensor) and v.requires_grad}
    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=False)
    return outs, dict(zip(leaves, grads))


def check_against_reference(fast, naive, inputs, tol: float = TOL):
    fast_outs, fast_grads = outputs_and_grads(fast, inputs)
    ref_outs, ref_grads = outputs_and_grads(naive, inputs)
    assert len(fast_outs) == len(ref_outs)
    for i, (a, b) in enumerate(zip(fast_outs, ref_outs)):
        assert a.dtype == b.dtype
        assert_close(a, b, tol, f"output {i}")
    assert fast_grads.keys() == ref_grads.keys()
    for name, grad in ref_grads.items():
        assert_close(fast_grads[name], grad, tol, f"grad of {name}")


def leaf(t: Tensor) -> Tensor:
    return t.detach().requires_grad_()


@contextlib.contextmanager
def torch_threads(threads: int):
    """The block on `threads` torch threads (the native kernels' OpenMP team)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def selective_scan_inputs(batch=2, length=33, channels=5, d_state=3, h0=True, gate=True,
                          dt_max=1.0, a_max=2.0, dtype=torch.float32):
    inputs = {
        "x": torch.randn(batch, length, channels),
        "dt": torch.rand(batch, length, channels) * dt_max + 1e-3,
        "A": -torch.rand(channels, d_state) * a_max - 0.05,
        "B": torch.randn(batch, length, d_state),
        "C": torch.randn(batch, length, d_state),
        "D": torch.randn(channels) if gate else None,
        "z": torch.randn(batch, length, channels) if gate else None,
        "h0": torch.randn(batch, channels, d_state) if h0 else None,
    }
    return {k: None if v is None else leaf(v.to(dtype)) for k, v in inputs.items()}


def ssd_inputs(batch=2, length=37, heads=4, head_dim=3, groups=2, d_state=5, h0=True,
               dt_max=1.0, a_max=2.0, dtype=torch.float32):
    inputs = {
        "x": torch.randn(batch, length, heads, head_dim),
        "dt": torch.rand(batch, length, heads) * dt_max + 1e-3,
        "A": -torch.rand(heads) * a_max - 0.05,
        "B": torch.randn(batch, length, groups, d_state),
        "C": torch.randn(batch, length, groups, d_state),
        "D": torch.randn(heads),
        "h0": torch.randn(batch, heads, head_dim, d_state) if h0 else None,
    }
    return {k: None if v is None else leaf(v.to(dtype)) for k, v in inputs.items()}


def linear_scan_inputs(batch=2, length=37, channels=6, h0=True, dtype=torch.float32):
    inputs = {
        "a": torch.rand(batch, length, channels) * 0.999 + 1e-3,
        "b": torch.randn(batch, length, channels),
        "h0": torch.randn(batch, channels) if h0 else None,
    }
    return {k: None if v is None else leaf(v.to(dtype)) for k, v in inputs.items()}


def split(inputs: dict, at: int, seq_keys: tuple[str, ...]):
    first = {k: (v[:, :at] if k in seq_keys else v) for k, v in inputs.items()}
    second = {k: (v[:, at:] if k in seq_keys else v) for k, v in inputs.items()}
    return first, second


# ------------------------------------------------------------------------- scan kernels


@pytest.mark.parametrize("length", range(1, 34))
def test_in_place_scan_kernels_match_loops(length):
    a, u = torch.rand(2, length, 3), torch.randn(2, length, 3)
    forward, backward = u.clone(), u.clone()
    scan_(a.clone(), forward)
    reverse_scan_(a.clone(), backward)
    h, expected_fwd = torch.zeros(2, 3), []
    for t in range(length):
        h = a[:, t] * h + u[:, t]
        expected_fwd.append(h)
    g, expected_bwd = torch.zeros(2, 3), []
    for t in reversed(range(length)):
        g = (a[:, t] * g if t < length - 1 else 0) + u[:, t]
        expected_bwd.append(g)
    assert_close(forward, torch.stack(expected_fwd, 1), 1e-5)
    assert_close(backward, torch.stack(expected_bwd[::-1], 1), 1e-5)


# ------------------------------------------------------------------------ selective scan


@pytest.mark.parametrize("length,chunk", [(1, 16), (7, 4), (33, 8), (64, 64), (100, 16), (130, 64)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_selective_scan_matches_reference(length, chunk, with_h0):
    inputs = selective_scan_inputs(length=length, h0=with_h0)
    fast = functools.partial(selective_scan, return_state=True, chunk_size=chunk)
    naive = functools.partial(naive_selective_scan, return_state=True)
    check_against_reference(fast, naive, inputs)


# the CPU kernel walks the channels in whole vectors (16 fp32 or 8 fp64 lanes) plus a remainder,
# its backward pass in blocks of two vectors where they divide the channels: 8 is a remainder
# alone in fp32, 16 and 32 whole vectors in both dtypes (32 two-vector blocks), 20 and 37 leave
# a remainder in both, 64 is several blocks
@pytest.mark.parametrize("channels", [8, 16, 20, 32, 37, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_selective_scan_channels_in_whole_vectors_and_remainders(channels, dtype):
    inputs = selective_scan_inputs(length=40, channels=channels, d_state=5, dtype=dtype)
    fast = functools.partial(selective_scan, return_state=True, chunk_size=16)
    check_against_reference(fast, functools.partial(naive_selective_scan, return_state=True),
                            inputs, tol=TOL if dtype == torch.float32 else 1e-9)


# the backward pass sums dL/dB and dL/dC over the channels a vector of state rows at a time
# (16 fp32 or 8 fp64) plus a remainder of rows
@pytest.mark.parametrize("d_state", [5, 16, 20, 33])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_selective_scan_state_sizes_in_whole_vectors_and_remainders(d_state, dtype):
    inputs = selective_scan_inputs(length=24, channels=20, d_state=d_state, dtype=dtype)
    fast = functools.partial(selective_scan, return_state=True, chunk_size=16)
    check_against_reference(fast, functools.partial(naive_selective_scan, return_state=True),
                            inputs, tol=TOL if dtype == torch.float32 else 1e-9)


def test_selective_scan_without_skip_gate_or_state_output():
    inputs = selective_scan_inputs(length=20, gate=False, h0=False)
    check_against_reference(functools.partial(selective_scan, chunk_size=8), naive_selective_scan,
                            inputs)


def test_selective_scan_accepts_non_contiguous_inputs():
    base = selective_scan_inputs(length=19, h0=False)
    inputs = {"xz": leaf(torch.randn(2, 19, 10)), "dt_t": leaf(torch.rand(2, 5, 19)),
              **{k: base[k] for k in ("A", "B", "C", "D")}}

    def run(fn, xz, dt_t, A, B, C, D, **kw):
        x, z = xz.chunk(2, dim=-1)  # strided views, as a mixer's in_proj produces them
        return fn(x, dt_t.transpose(1, 2), A, B, C, D=D, z=z, return_state=True, **kw)

    check_against_reference(functools.partial(run, selective_scan, chunk_size=4),
                            functools.partial(run, naive_selective_scan), inputs)


def test_selective_scan_chained_through_state_equals_one_call():
    inputs = {k: v.detach() for k, v in selective_scan_inputs(length=45).items()}
    whole, final = selective_scan(**inputs, return_state=True, chunk_size=8)
    seq = ("x", "dt", "B", "C", "z")
    first, second = split(inputs, 21, seq)
    y1, h1 = selective_scan(**first, return_state=True, chunk_size=8)
    y2, h2 = selective_scan(**{**second, "h0": h1}, return_state=True, chunk_size=8)
    assert_close(torch.cat([y1, y2], 1), whole)
    assert_close(h2, final)


def test_selective_scan_stable_for_long_sequences_and_large_decays():
    # dt * |A| reaches ~800: exp of any positive partial sum would overflow immediately.
    inputs = selective_scan_inputs(batch=1, length=3000, channels=3, d_state=4, dt_max=50.0,
                                   a_max=16.0)
    fast = functools.partial(selective_scan, return_state=True)
    check_against_reference(fast, functools.partial(naive_selective_scan, return_state=True),
                            inputs)


@pytest.mark.parametrize("gate", [False, True])
def test_selective_scan_step_by_step_equals_one_call(gate):
    inputs = {k: v if v is None else v.detach()
              for k, v in selective_scan_inputs(length=9, gate=gate).items()}
    whole, final = selective_scan(**inputs, return_state=True)
    h, ys = inputs["h0"], []
    for t in range(9):
        step = {k: inputs[k][:, t] for k in ("x", "dt", "B", "C")}
        y, h = selective_scan_step(step["x"], step["dt"], inputs["A"], step["B"], step["C"], h,
                                   D=inputs["D"], z_t=None if not gate else inputs["z"][:, t])
        ys.append(y)
    assert_close(torch.stack(ys, 1), whole, what="outputs")
    assert_close(h, final, what="state")


def test_selective_scan_step_keeps_the_dtypes_and_the_gradients():
    inputs = selective_scan_inputs(length=1, dtype=torch.bfloat16)
    step = {k: inputs[k][:, 0] for k in ("x", "dt", "B", "C", "z")}
    y, h = selective_scan_step(step["x"], step["dt"], inputs["A"], step["B"], step["C"],
                               inputs["h0"], D=inputs["D"], z_t=step["z"])
    assert y.dtype == h.dtype == torch.bfloat16
    ref, ref_h = naive_selective_scan(**inputs, return_state=True)
    assert_close(y.float(), ref[:, 0].float(), 2e-2)
    assert_close(h.float(), ref_h.float(), 2e-2)
    (y.float().sum() + h.float().sum()).backward()
    assert inputs["h0"].grad is not None and inputs["A"].grad is not None


def test_selective_scan_gradcheck_fp64():
    inputs = selective_scan_inputs(batch=1, length=6, channels=2, d_state=2, dtype=torch.float64)
    names = list(inputs)

    def fn(*args):
        return selective_scan(**dict(zip(names, args)), return_state=True, chunk_size=4)

    assert torch.autograd.gradcheck(fn, tuple(inputs.values()), eps=1e-6, atol=1e-5)


# --------------------------------------------------------------------------------- SSD


@pytest.mark.parametrize("length,chunk", [(1, 4), (5, 4), (10, 64), (37, 16), (64, 16), (70, 64)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_ssd_matches_reference(length, chunk, with_h0):
    inputs = ssd_inputs(length=length, h0=with_h0)
    fast = functools.partial(ssd, return_state=True, chunk_size=chunk)
    check_against_reference(fast, functools.partial(naive_ssd, return_state=True), inputs)


# the CPU kernel walks the head dim in whole vectors (16 fp32 or 8 fp64 lanes) plus a
# remainder: 16 and 32 are whole vectors in both dtypes, 20 leaves a remainder in both
@pytest.mark.parametrize("head_dim", [16, 20, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssd_head_dims_in_whole_vectors_and_remainders(head_dim, dtype):
    inputs = ssd_inputs(length=40, heads=2, head_dim=head_dim, groups=1, d_state=6, dtype=dtype)
    fast = functools.partial(ssd, return_state=True, chunk_size=16)
    check_against_reference(fast, functools.partial(naive_ssd, return_state=True), inputs,
                            tol=TOL if dtype == torch.float32 else 1e-9)


# the backward pass walks the state size in the widest blocks of one, two or four vectors
# (16, 32, 64 fp32 lanes; 8, 16, 32 fp64) that divide it, else in blocks of two and a remainder:
# each block width, one and several blocks per row, and remainders alone and after blocks
@pytest.mark.parametrize("d_state", [8, 16, 20, 32, 37, 64, 128])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssd_state_sizes_in_whole_vectors_and_remainders(d_state, dtype):
    inputs = ssd_inputs(length=24, heads=2, head_dim=5, groups=1, d_state=d_state, dtype=dtype)
    fast = functools.partial(ssd, return_state=True, chunk_size=16)
    check_against_reference(fast, functools.partial(naive_ssd, return_state=True), inputs,
                            tol=TOL if dtype == torch.float32 else 1e-9)


@pytest.mark.parametrize("groups", [1, 4])
def test_ssd_groups_of_B_and_C(groups):
    inputs = ssd_inputs(length=23, groups=groups)
    fast = functools.partial(ssd, return_state=True, chunk_size=8)
    check_against_reference(fast, functools.partial(naive_ssd, return_state=True), inputs)


def test_ssd_chained_through_state_equals_one_call():
    inputs = {k: v.detach() for k, v in ssd_inputs(length=50).items()}
    whole, final = ssd(**inputs, return_state=True, chunk_size=16)
    first, second = split(inputs, 19, ("x", "dt", "B", "C"))
    y1, h1 = ssd(**first, return_state=True, chunk_size=16)
    y2, h2 = ssd(**{**second, "h0": h1}, return_state=True, chunk_size=16)
    assert_close(torch.cat([y1, y2], 1), whole)
    assert_close(h2, final)


@pytest.mark.parametrize("seed", [0, 1, 5])
def test_ssd_stable_for_long_sequences_and_large_decays(seed):
    # dt * |A| up to 800 per step: the within-chunk log decays reach -1e4, where a difference
    # of cumulative sums (forward) or "all windows minus the others" (backward, the gradient
    # of A) would lose 3 digits; several seeds, since the error of those shortcuts is erratic
    torch.manual_seed(seed)
    inputs = ssd_inputs(batch=1, length=1500, heads=2, head_dim=2, groups=1, d_state=3,
                        dt_max=50.0, a_max=16.0)
    fast = functools.partial(ssd, return_state=True, chunk_size=64)
    check_against_reference(fast, functools.partial(naive_ssd, return_state=True), inputs)


# ------------------------------------------------------------------------- linear scan


@pytest.mark.parametrize("length", [1, 2, 7, 64, 257])
@pytest.mark.parametrize("with_h0", [False, True])
def test_linear_scan_matches_reference(length, with_h0):
    inputs = linear_scan_inputs(length=length, h0=with_h0)
    fast = functools.partial(linear_scan, return_state=True)
    check_against_reference(fast, functools.partial(naive_linear_scan, return_state=True), inputs)


def test_linear_scan_broadcasts_decay_and_multi_dim_channels():
    inputs = {"a": leaf(torch.rand(2, 30, 3, 1)), "b": leaf(torch.randn(2, 30, 3, 4)),
              "h0": leaf(torch.randn(2, 3, 4))}
    fast = functools.partial(linear_scan, return_state=True)
    check_against_reference(fast, functools.partial(naive_linear_scan, return_state=True), inputs)


def test_linear_scan_chained_through_state_equals_one_call():
    inputs = {k: v.detach() for k, v in linear_scan_inputs(length=41).items()}
    whole, final = linear_scan(**inputs, return_state=True)
    first, second = split(inputs, 17, ("a", "b"))
    y1, h1 = linear_scan(**first, return_state=True)
    y2, h2 = linear_scan(**{**second, "h0": h1}, return_state=True)
    assert_close(torch.cat([y1, y2], 1), whole)
    assert_close(h2, final)


def test_linear_scan_stable_for_long_sequences_and_tiny_decays():
    # decays down to exp(-200): they underflow to exact zeros (resets) in fp32.
    inputs = linear_scan_inputs(batch=1, length=5000, channels=4)
    inputs["a"] = leaf(torch.exp(-200 * torch.rand(1, 5000, 4) ** 4))
    fast = functools.partial(linear_scan, return_state=True)
    check_against_reference(fast, functools.partial(naive_linear_scan, return_state=True), inputs)


def test_linear_scan_gradcheck_fp64():
    inputs = linear_scan_inputs(batch=1, length=9, channels=2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, return_state=True),
                                    tuple(inputs.values()))


# ---------------------------------------------------------------------- causal conv1d


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5])  # 2-4 have kernels of their own
@pytest.mark.parametrize("length", [1, 3, 10])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("silu", [False, True])
@pytest.mark.parametrize("channels, bias", [(5, True), (37, True), (37, False)])
def test_causal_conv1d_matches_reference(width, length, with_state, silu, channels, bias):
    inputs = {
        "x": leaf(torch.randn(2, length, channels)),
        "weight": leaf(torch.randn(channels, width)),
        "bias": leaf(torch.randn(channels)) if bias else None,
        "state": leaf(torch.randn(2, channels, width - 1)) if with_state else None,
    }
    fast = functools.partial(causal_conv1d, return_state=True, silu=silu)
    naive = functools.partial(naive_causal_conv1d, return_state=True, silu=silu)
    check_against_reference(fast, naive, inputs)


def test_causal_conv1d_gradcheck_fp64():
    inputs = (leaf(torch.randn(2, 6, 3, dtype=torch.float64)),
              leaf(torch.randn(3, 4, dtype=torch.float64)),
              leaf(torch.randn(3, dtype=torch.float64)),
              leaf(torch.randn(2, 3, 3, dtype=torch.float64)))
    fn = functools.partial(causal_conv1d, return_state=True, silu=True)
    assert torch.autograd.gradcheck(lambda x, w, b, s: fn(x, w, b, s), inputs, eps=1e-6,
                                    atol=1e-5)


def test_causal_conv1d_without_bias_matches_reference():
    inputs = {"x": leaf(torch.randn(3, 7, 4)), "weight": leaf(torch.randn(4, 3)), "bias": None}
    check_against_reference(functools.partial(causal_conv1d, silu=True),
                            functools.partial(naive_causal_conv1d, silu=True), inputs)


def test_causal_conv1d_silu_is_the_conv_then_silu():
    x, weight, bias = torch.randn(2, 9, 5), torch.randn(5, 4), torch.randn(5)
    assert_close(causal_conv1d(x, weight, bias, silu=True),
                 F.silu(causal_conv1d(x, weight, bias)), 1e-6)


def test_causal_conv1d_is_causal_with_the_last_tap_on_the_current_input():
    x = torch.zeros(1, 6, 1)
    x[0, 2, 0] = 1.0
    y = causal_conv1d(x, torch.tensor([[1.0, 2.0, 3.0]]))
    assert y[0, :, 0].tolist() == [0.0, 0.0, 3.0, 2.0, 1.0, 0.0]


@pytest.mark.parametrize("width", [1, 4])
def test_causal_conv1d_step_by_step_equals_parallel(width):
    x, weight, bias = torch.randn(2, 9, 5), torch.randn(5, width), torch.randn(5)
    state0 = torch.randn(2, 5, width - 1)
    parallel, final = causal_conv1d(x, weight, bias, state=state0, return_state=True)
    state, steps = state0, []
    for t in range(x.shape[1]):
        y_t, state = causal_conv1d_step(x[:, t], state, weight, bias)
        steps.append(y_t)
    assert_close(torch.stack(steps, 1), parallel, 1e-5)
    assert_close(state, final)


def test_causal_conv1d_chained_through_state_equals_one_call():
    x, weight, bias = torch.randn(2, 12, 5), torch.randn(5, 4), torch.randn(5)
    whole, final = causal_conv1d(x, weight, bias, return_state=True)
    y1, s1 = causal_conv1d(x[:, :2], weight, bias, return_state=True)  # shorter than K-1
    y2, s2 = causal_conv1d(x[:, 2:], weight, bias, state=s1, return_state=True)
    assert_close(torch.cat([y1, y2], 1), whole, 1e-5)
    assert_close(s2, final)


# ----------------------------------------------------------------------- FFT long conv


@pytest.mark.parametrize("length", [1, 7, 64, 100])
@pytest.mark.parametrize("filter_len", ["full", "short"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fft_long_conv_matches_reference(length, filter_len, with_bias):
    taps = length if filter_len == "full" else max(1, length // 3)
    inputs = {
        "u": leaf(torch.randn(2, length, 4)),
        "h": leaf(torch.randn(taps, 4) / length**0.5),
        "bias": leaf(torch.randn(4)) if with_bias else None,
    }
    check_against_reference(fft_long_conv, naive_long_conv, inputs)


def test_blocked_conv_paths_match_reference(monkeypatch):
    # the smallest blocks: the conv's weight gradient one time step at a time, the FFT conv
    # one sequence at a time (large inputs take these paths with bigger blocks)
    import trials.ops._memory as memory
    from trials.ops import conv

    monkeypatch.setattr(conv, "WEIGHT_GRAD_BLOCK", 1)
    monkeypatch.setattr(memory, "TEMP_BYTES", 1)
    inputs = {"x": leaf(torch.randn(3, 11, 5)), "weight": leaf(torch.randn(5, 4)),
              "bias": leaf(torch.randn(5)), "state": leaf(torch.randn(3, 5, 3))}
    check_against_reference(functools.partial(causal_conv1d, return_state=True),
                            functools.partial(naive_causal_conv1d, return_state=True), inputs)
    inputs = {"u": leaf(torch.randn(3, 20, 4)), "h": leaf(torch.randn(20, 4) / 5),
              "bias": leaf(torch.randn(4))}
    check_against_reference(fft_long_conv, naive_long_conv, inputs)


# The native kernel sums blocks of 8 outputs (8 taps for the filter's gradient) over channels
# in whole vectors (16 fp32 or 8 fp64 lanes) plus a remainder; the last block is moved back to
# end with the sequence, and sequences shorter than a block take a path of their own.
@pytest.mark.parametrize("length,channels", [(3, 5), (8, 16), (9, 20), (23, 37), (64, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_long_conv_native_kernel_in_blocks_and_remainders(kernels, length, channels, dtype):
    inputs = {"u": leaf(torch.randn(3, length, channels, dtype=dtype)),
              "h": leaf(torch.randn(length, channels, dtype=dtype) / length**0.5),
              "bias": leaf(torch.randn(channels, dtype=dtype))}
    with dispatch.recording() as ran:
        check_against_reference(fft_long_conv, naive_long_conv, inputs,
                                tol=TOL if dtype == torch.float32 else 1e-10)
    assert ran.kernels() == {"fft_long_conv": kernels}


@pytest.mark.parametrize("length", [40, 2000])  # the direct sum's range, and the FFT's beyond
@pytest.mark.parametrize("fallback", [False, True])
def test_long_conv_of_an_empty_batch(length, fallback):
    u, h, bias = leaf(torch.randn(0, length, 6)), leaf(torch.randn(length, 6)), leaf(torch.randn(6))
    with dispatch.disabled() if fallback else contextlib.nullcontext():
        y = fft_long_conv(u, h, bias)
        assert y.shape == (0, length, 6)
        y.sum().backward()
    assert torch.equal(h.grad, torch.zeros_like(h)) and torch.equal(bias.grad, torch.zeros(6))


def test_long_conv_forced_fallback_and_long_sequences_take_the_fft(kernels, monkeypatch):
    from trials.ops import conv

    inputs = {"u": leaf(torch.randn(2, 40, 6)), "h": leaf(torch.randn(30, 6) / 6),
              "bias": leaf(torch.randn(6))}
    with dispatch.recording() as ran:
        native_y = fft_long_conv(**inputs)
    with dispatch.disabled(), dispatch.recording() as ran_fallback:
        fallback_y = fft_long_conv(**inputs)
    monkeypatch.setattr(conv, "DIRECT_LONG_CONV_MAX_LENGTH", 39)
    with dispatch.recording() as ran_long:
        long_y = fft_long_conv(**inputs)
    assert ran.kernels() == {"fft_long_conv": kernels}
    assert ran_fallback.kernels() == ran_long.kernels() == {"fft_long_conv": dispatch.PYTORCH}
    assert_close(native_y, fallback_y, 1e-5)
    assert_close(long_y, fallback_y, 0)


@pytest.mark.parametrize("threads", [1, 3])
def test_long_conv_filter_gradient_sums_every_threads_sequences(kernels, threads):
    inputs = {"u": leaf(torch.randn(7, 19, 18)), "h": leaf(torch.randn(19, 18) / 4),
              "bias": leaf(torch.randn(18))}
    with torch_threads(threads):
        check_against_reference(fft_long_conv, naive_long_conv, inputs)


def test_long_conv_native_gradcheck_fp64(kernels):
    inputs = (torch.randn(2, 11, 3, dtype=torch.float64, requires_grad=True),
              torch.randn(11, 3, dtype=torch.float64, requires_grad=True),
              torch.randn(3, dtype=torch.float64, requires_grad=True))
    assert torch.autograd.gradcheck(fft_long_conv, inputs, eps=1e-6, atol=1e-6)


def test_fft_long_conv_is_causal():
    u = torch.randn(1, 50, 3)
    h = torch.randn(50, 3)
    changed = u.clone()
    changed[:, 30:] += 1.0
    assert_close(fft_long_conv(changed, h)[:, :30], fft_long_conv(u, h)[:, :30], 1e-6)


def test_fft_size_is_the_next_5_smooth_number():
    assert [fft_size(n) for n in (1, 7, 11, 13, 97, 1000, 1025)] == [1, 8, 12, 15, 100, 1000, 1080]


# ------------------------------------------------------------------------- dtypes, devices


def _all_ops():
    """{name: (fast fn, inputs maker taking a dtype)} for every op, at small sizes."""
    return {
        "selective_scan": (
            functools.partial(selective_scan, return_state=True, chunk_size=8),
            lambda dt: selective_scan_inputs(length=21, dtype=dt),
        ),
        "ssd": (
            functools.partial(ssd, return_state=True, chunk_size=8),
            lambda dt: ssd_inputs(length=21, dtype=dt),
        ),
        "linear_scan": (
            functools.partial(linear_scan, return_state=True),
            lambda dt: linear_scan_inputs(length=21, dtype=dt),
        ),
        "causal_conv1d": (
            functools.partial(causal_conv1d, return_state=True, silu=True),
            lambda dt: {"x": leaf(torch.randn(2, 21, 5, dtype=dt)),
                        "weight": leaf(torch.randn(5, 4, dtype=dt)),
                        "bias": leaf(torch.randn(5, dtype=dt)),
                        "state": leaf(torch.randn(2, 5, 3, dtype=dt))},
        ),
        "rms_norm": (
            lambda x, weight: rms_norm(x, weight, 1e-5),
            lambda dt: {"x": leaf(torch.randn(2, 21, 6, dtype=dt)),
                        "weight": leaf(torch.rand(6, dtype=dt) + 0.5)},
        ),
        "add_rms_norm": (
            lambda x, delta, weight: add_rms_norm(x, delta, weight, 1e-5),
            lambda dt: {"x": leaf(torch.randn(2, 21, 6, dtype=dt)),
                        "delta": leaf(torch.randn(2, 21, 6, dtype=dt)),
                        "weight": leaf(torch.rand(6, dtype=dt) + 0.5)},
        ),
        "glu": (
            glu,
            lambda dt: {"gate": leaf(torch.randn(2, 21, 6, dtype=dt) * 3),
                        "up": leaf(torch.randn(2, 21, 6, dtype=dt))},
        ),
        "softplus": (
            softplus,
            lambda dt: {"x": leaf(torch.randn(2, 21, 6, dtype=dt) * 8)},
        ),
        "softplus_linear": (
            softplus_linear,
            lambda dt: step_size_inputs(dtype=dt),
        ),
        "rope": (
            lambda x: rotate_heads(x, 3, 10000.0, 6),
            lambda dt: {"x": leaf(torch.randn(2, 21, 3, 8, dtype=dt))},
        ),
        "attention": (
            causal_attention,
            lambda dt: attention_inputs(length=21, group=2, dtype=dt),
        ),
        "windowed_attention": (
            lambda q, k, v: causal_attention(q, k, v, window=6),
            lambda dt: attention_inputs(length=21, group=2, dtype=dt),
        ),
        "rglru_gates": (
            rglru_gates,
            lambda dt: rglru_inputs(dtype=dt),
        ),
        "block_diagonal_linear": (
            block_diagonal_linear,
            lambda dt: block_diagonal_inputs(dtype=dt),
        ),
        "fft_long_conv": (
            fft_long_conv,
            lambda dt: {"u": leaf(torch.randn(2, 21, 4, dtype=dt)),
                        "h": leaf(torch.randn(21, 4, dtype=dt) / 5),
                        "bias": leaf(torch.randn(4, dtype=dt))},
        ),
    }


# ops whose output stays fp32 for bf16 inputs: Mamba's step size (in bf16 small steps round to 0)
FP32_OUTPUT = ("softplus_linear",)


@pytest.mark.parametrize("name", list(_all_ops()))
def test_bf16_in_bf16_out_close_to_fp32(name):
    fn, make = _all_ops()[name]
    inputs = make(torch.bfloat16)
    outs, grads = outputs_and_grads(fn, inputs)
    ref_inputs = {k: None if v is None else leaf(v.float()) for k, v in inputs.items()}
    ref_outs, _ = outputs_and_grads(fn, ref_inputs)
    for out, ref in zip(outs, ref_outs):
        assert out.dtype == (torch.float32 if name in FP32_OUTPUT else torch.bfloat16)
        assert_close(out.float(), ref, 2e-2, "bf16 output")
    for k, grad in grads.items():
        assert grad.dtype == torch.bfloat16, k
        assert torch.isfinite(grad.float()).all(), k


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("name", list(_all_ops()))
def test_cuda_matches_cpu(name):
    fn, make = _all_ops()[name]
    inputs = make(torch.float32)
    cuda_inputs = {k: None if v is None else leaf(v.cuda()) for k, v in inputs.items()}
    outs, grads = outputs_and_grads(fn, inputs)
    cuda_outs, cuda_grads = outputs_and_grads(fn, cuda_inputs)
    for out, ref in zip(cuda_outs, outs):
        assert out.device.type == "cuda"
        assert_close(out.cpu(), ref, 1e-4, "cuda output")
    for k, grad in cuda_grads.items():
        assert_close(grad.cpu(), grads[k], 1e-4, f"cuda grad of {k}")


def test_silu_gate_and_skip_follow_the_mamba_definition():
    inputs = {k: v.detach() for k, v in selective_scan_inputs(length=5, h0=False).items()
              if v is not None}
    plain = selective_scan(inputs["x"], inputs["dt"], inputs["A"], inputs["B"], inputs["C"])
    full = selective_scan(**inputs)
    expected = (plain + inputs["D"] * inputs["x"]) * F.silu(inputs["z"])
    assert_close(full, expected, 1e-6)


@pytest.mark.parametrize("name", list(_all_ops()))
def test_expanded_output_gradients_equal_dense_ones(name):
    """`out.sum()` sends stride-0 gradients, which a native backward copies before reading:
    the copy must outlive the kernel call (it once did not, and the kernel read freed memory)."""
    fn, make = _all_ops()[name]
    inputs = make(torch.float32)
    leaves = [v for v in inputs.values() if v is not None]
    for _ in range(3):
        expanded = torch.autograd.grad(sum(o.sum() for o in _as_tuple(fn(**inputs))), leaves)
        dense = torch.autograd.grad(
            sum((o * torch.ones_like(o)).sum() for o in _as_tuple(fn(**inputs))), leaves)
        for a, b in zip(expanded, dense):
            assert_close(a, b, 1e-6, "gradient from out.sum()")


def _as_tuple(outs):
    return outs if isinstance(outs, tuple) else (outs,)


# Ops that under autocast run as the model always did, autocast's bf16 included: attention (SDPA
# is on autocast's bf16 list: `test_attention_under_autocast_is_sdpa_under_autocast`) and
# Mamba's dt projection (a bf16 product, then an fp32 softplus:
# `test_softplus_linear_under_autocast_is_the_bf16_product_then_fp32`)
AS_BEFORE_UNDER_AUTOCAST = ("attention", "windowed_attention", "softplus_linear",
                            "block_diagonal_linear")


@pytest.mark.parametrize("name",
                         [name for name in _all_ops() if name not in AS_BEFORE_UNDER_AUTOCAST])
def test_autocast_does_not_lower_the_ops_precision(name):
    fn, make = _all_ops()[name]
    inputs = make(torch.float32)
    outs, grads = outputs_and_grads(fn, inputs)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16)  # the forward only, as in training
    auto_outs, auto_grads = outputs_and_grads(fn, inputs, forward_context=autocast)
    for out, ref in zip(auto_outs, outs):
        assert out.dtype == torch.float32
        assert_close(out, ref, 1e-6, "output under autocast")
    for k, grad in auto_grads.items():
        assert_close(grad, grads[k], 1e-6, f"grad of {k} under autocast")


# --------------------------------------------------------------------------------- RMSNorm


# widths in whole vectors (16 fp32 or 8 fp64 lanes) and with remainders
@pytest.mark.parametrize("shape", [(2, 7, 16), (5, 3), (3, 4, 20), (2, 3, 37)])
def test_rms_norm_matches_reference_and_the_module(shape):
    inputs = {"x": leaf(torch.randn(*shape) * 3), "weight": leaf(torch.rand(shape[-1]) + 0.5)}
    check_against_reference(lambda x, weight: rms_norm(x, weight, 1e-5),
                            lambda x, weight: naive_rms_norm(x, weight, 1e-5), inputs, 1e-5)
    norm = RMSNorm(shape[-1], eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(inputs["weight"])
        assert_close(norm(inputs["x"]), naive_rms_norm(inputs["x"], norm.weight, 1e-5), 1e-6)


def test_rms_norm_keeps_the_module_rounding_in_bf16():
    norm = RMSNorm(16)
    x = torch.randn(3, 16).bfloat16()
    y = rms_norm(x, norm.weight, norm.eps)
    assert y.dtype == norm(x).dtype and torch.equal(y, norm(x))


def test_rms_norm_gradcheck_fp64():
    x, weight = leaf(torch.randn(3, 4, 5, dtype=torch.float64)), leaf(
        torch.rand(5, dtype=torch.float64) + 0.5)
    assert torch.autograd.gradcheck(lambda x, w: rms_norm(x, w, 1e-5), (x, weight))


@pytest.mark.parametrize("threads", [1, 3])
def test_rms_norm_weight_gradient_sums_every_threads_rows(threads):
    """The native backward keeps one weight-gradient row per thread and the caller sums them."""
    inputs = {"x": leaf(torch.randn(7, 5, 16)), "weight": leaf(torch.rand(16) + 0.5)}
    with torch_threads(threads):
        check_against_reference(lambda x, weight: rms_norm(x, weight, 1e-5),
                                lambda x, weight: naive_rms_norm(x, weight, 1e-5), inputs, 1e-5)


def add_norm_inputs(*shape, dtype=torch.float32):
    return {"x": leaf(torch.randn(*shape, dtype=dtype) * 2),
            "delta": leaf(torch.randn(*shape, dtype=dtype)),
            "weight": leaf(torch.rand(shape[-1], dtype=dtype) + 0.5)}


def fused_add_norm(x, delta, weight):
    return add_rms_norm(x, delta, weight, 1e-5)


def reference_add_norm(x, delta, weight):
    return naive_add_rms_norm(x, delta, weight, 1e-5)


@pytest.mark.parametrize("shape", [(2, 7, 16), (5, 3), (3, 4, 20), (2, 3, 37), (0, 4, 16)])
def test_add_rms_norm_matches_reference(shape):
    check_against_reference(fused_add_norm, reference_add_norm, add_norm_inputs(*shape), 1e-5)


@pytest.mark.parametrize("used", ["sum", "norm"])
def test_add_rms_norm_with_one_output_unused(used):
    """A residual stream whose sum has no later use (the last layer), or a norm whose output is
    dropped: the unused output's gradient arrives as None."""
    inputs = add_norm_inputs(3, 5, 16)
    pick = 0 if used == "sum" else 1
    if used == "sum":  # the sum does not depend on the weight
        inputs["weight"] = inputs["weight"].detach()
    check_against_reference(lambda **kw: fused_add_norm(**kw)[pick],
                            lambda **kw: reference_add_norm(**kw)[pick], inputs, 1e-5)


def test_add_rms_norm_gradcheck_fp64():
    inputs = add_norm_inputs(3, 4, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(fused_add_norm, tuple(inputs.values()))


@pytest.mark.parametrize("threads", [1, 3])
def test_add_rms_norm_weight_gradient_sums_every_threads_rows(threads):
    with torch_threads(threads):
        check_against_reference(fused_add_norm, reference_add_norm, add_norm_inputs(7, 5, 16),
                                1e-5)


def test_add_rms_norm_runs_the_kernel_only_where_it_computes_the_same(kernels):
    """A broadcast delta or a second dtype takes the add and `rms_norm`, recorded as such."""
    weight = torch.rand(16) + 0.5
    x = torch.randn(2, 5, 16)
    cases = {"same": torch.randn(2, 5, 16), "broadcast": torch.randn(5, 16),
             "fp64 delta": torch.randn(2, 5, 16, dtype=torch.float64)}
    for case, delta in cases.items():
        with dispatch.recording() as ran:
            total, normed = add_rms_norm(x, delta, weight, 1e-5)
        expected = kernels if case == "same" else native.PYTORCH
        assert ran.kernels()["add_rms_norm"] == expected, case
        ref_total, ref_normed = naive_add_rms_norm(x, delta, weight, 1e-5)
        assert total.dtype == ref_total.dtype, case
        assert_close(total, ref_total, 0, case)
        assert_close(normed, ref_normed, 1e-6, case)


# ----------------------------------------------------------------------------- gated unit


# the two activations with a compiled GLU: SwiGLU's silu and GeGLU's tanh GELU
COMPILED_GLU = ["silu", "gelu_tanh"]


@pytest.mark.parametrize("act", COMPILED_GLU)
@pytest.mark.parametrize("shape", [(2, 7, 24), (5, 3), (4097,)])
def test_glu_matches_reference(shape, act, kernels):
    fn = ACTIVATIONS[act]
    inputs = {"gate": leaf(torch.randn(*shape) * 4), "up": leaf(torch.randn(*shape))}
    with dispatch.recording() as ran:
        check_against_reference(lambda gate, up: glu(gate, up, fn),
                                lambda gate, up: naive_glu(gate, up, fn), inputs, 1e-5)
    assert ran.kernels()["glu"] == kernels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("act", COMPILED_GLU)
def test_glu_of_extreme_gates_is_finite_and_exact_in_the_limits(act, dtype):
    fn = ACTIVATIONS[act]
    gate = torch.tensor([-1e4, -100.0, -88.5, -30.0, -5.0, -1e-3, 0.0, 1e-3, 5.0, 88.5, 100.0,
                         1e4], dtype=dtype, requires_grad=True)
    up = torch.ones_like(gate)
    h = glu(gate, up, fn)
    # against the activation in fp64: in fp32 PyTorch's tanh GELU loses digits to cancellation
    # (1 + tanh(v) near v = -8, its slope at 1e4 reads 1.000002)
    exact = gate.detach().double().requires_grad_()
    assert_close(h, fn(exact).detach(), 1e-6)
    (grad,) = torch.autograd.grad(h.sum(), gate)
    assert_close(grad, torch.autograd.grad(fn(exact).sum(), exact)[0], 1e-6)


@pytest.mark.parametrize("act", ["gelu", "relu2"])
def test_glu_with_other_activations_is_the_composite(act):
    fn = ACTIVATIONS[act]
    inputs = {"gate": leaf(torch.randn(3, 5, 8)), "up": leaf(torch.randn(3, 5, 8))}
    with dispatch.recording() as ran:
        check_against_reference(lambda gate, up: glu(gate, up, fn),
                                lambda gate, up: fn(gate) * up, inputs, 1e-6)
    assert ran.kernels()["glu"] == native.PYTORCH


@pytest.mark.parametrize("act", COMPILED_GLU)
def test_glu_gradcheck_fp64(act):
    fn = ACTIVATIONS[act]
    gate, up = (leaf(torch.randn(3, 7, dtype=torch.float64)) for _ in range(2))
    assert torch.autograd.gradcheck(lambda gate, up: glu(gate, up, fn), (gate, up))


# ---------------------------------------------------------------------------- RG-LRU gates


def rglru_inputs(shape=(2, 21, 6), dtype=torch.float32):
    width = shape[-1]
    return {"gate_a": leaf((torch.randn(*shape) * 3).to(dtype)),
            "gate_x": leaf((torch.randn(*shape) * 3).to(dtype)),
            "x": leaf(torch.randn(*shape).to(dtype)),
            "coef": leaf((-8 * F.softplus(-torch.randn(width) * 3)).to(dtype))}


@pytest.mark.parametrize("shape", [(2, 21, 6), (3, 40), (1, 5, 70)])
def test_rglru_gates_match_reference(shape, kernels):
    with dispatch.recording() as ran:
        check_against_reference(rglru_gates, naive_rglru_gates, rglru_inputs(shape), 1e-5)
    assert ran.kernels()["rglru_gates"] == kernels


def test_rglru_gates_near_a_equal_1_and_under_the_floor():
    # r -> 0 (gate_a -> -inf) or coef -> 0 puts a at 1, where 1 - a^2 falls under the floor and
    # sqrt's slope would be infinite: values and gradients stay finite and match the composite
    # computed in fp64; a small |coef r| (1e-4..1e-2) is where 1 - a^2 cancels without expm1
    gate_a = torch.tensor([-200.0, -30.0, -12.0, -9.0, -5.0, 0.0, 5.0, 30.0]).repeat(4, 1)
    coef = torch.tensor([-1e-9, -1e-4, -1e-2, -1.0, -8.0, -50.0, -1e-6, -3.0])
    inputs = {"gate_a": leaf(gate_a), "gate_x": leaf(torch.randn(4, 8)),
              "x": leaf(torch.randn(4, 8)), "coef": leaf(coef)}
    exact = {k: leaf(v.detach().double()) for k, v in inputs.items()}
    outs, grads = outputs_and_grads(rglru_gates, inputs)
    ref_outs, ref_grads = outputs_and_grads(naive_rglru_gates, exact)
    for out, ref in zip(outs, ref_outs):
        assert_close(out, ref.float(), 1e-6, "output")
    for name, grad in ref_grads.items():
        assert_close(grads[name], grad.float(), 1e-4, f"grad of {name}")


def test_rglru_gates_gradcheck_fp64():
    inputs = rglru_inputs((2, 5, 4), dtype=torch.float64)
    assert torch.autograd.gradcheck(rglru_gates, tuple(inputs.values()))


# ------------------------------------------------------------------------------ softplus


def test_softplus_matches_torch_over_the_whole_range():
    """Both sides of the threshold (20), tiny results far left (log1p of tiny values to full
    relative precision), and values where 1 + e^x rounds."""
    x = torch.cat([torch.linspace(-90, 90, 4001), torch.tensor([-1e4, -20.0, 19.999, 20.0,
                                                                 20.001, 1e4, 0.0])])
    x = leaf(x)
    y, expected = softplus(x), F.softplus(x.detach())
    rel = ((y.detach().double() - expected.double()).abs()
           / expected.double().abs().clamp(min=1e-30))
    assert rel[expected > 1e-37].max() < 1e-6  # relative, down to the smallest normals
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert_close(grad, torch.sigmoid(x.detach()).where(x.detach() <= 20, 1.0), 1e-6)


def test_softplus_matches_reference_and_gradcheck_fp64():
    inputs = {"x": leaf(torch.randn(3, 17) * 6)}
    check_against_reference(softplus, F.softplus, inputs, 1e-6)
    x = leaf(torch.randn(4, 5, dtype=torch.float64) * 3)
    assert torch.autograd.gradcheck(softplus, (x,))


# ------------------------------------------------------------- the RG-LRU's gate blocks


def block_diagonal_inputs(rows=(2, 9), blocks=3, fan_in=5, fan_out=7, bias=True,
                          dtype=torch.float32):
    """x (*rows, blocks * fan_in), weight (blocks, fan_in, fan_out), bias (blocks * fan_out)."""
    return {"x": leaf(torch.randn(*rows, blocks * fan_in, dtype=dtype)),
            "weight": leaf(torch.randn(blocks, fan_in, fan_out, dtype=dtype)),
            "bias": leaf(torch.randn(blocks * fan_out, dtype=dtype)) if bias else None}


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("blocks, fan_in, fan_out", [(4, 16, 16), (1, 1, 1), (3, 5, 7),
                                                     (2, 16, 9), (2, 3, 16)])
@pytest.mark.parametrize("rows", [(1,), (2, 9), (3, 32)])
def test_block_diagonal_linear_matches_reference(rows, blocks, fan_in, fan_out, dtype, tol,
                                                 kernels):
    # rows past a multiple of the kernel's row block, lanes past a whole vector and short of one
    inputs = block_diagonal_inputs(rows, blocks, fan_in, fan_out, dtype=dtype)
    with dispatch.recording() as ran:
        check_against_reference(block_diagonal_linear, naive_block_diagonal_linear, inputs, tol)
    assert ran.kernels()["block_diagonal_linear"] == kernels


def test_block_diagonal_linear_without_bias_gradcheck_fp64_and_the_block_limit():
    inputs = block_diagonal_inputs((2, 3), 2, 3, 4, bias=False, dtype=torch.float64)
    check_against_reference(block_diagonal_linear, naive_block_diagonal_linear, inputs, 1e-12)
    assert torch.autograd.gradcheck(block_diagonal_linear, (inputs["x"], inputs["weight"]))
    wide = block_diagonal_inputs((2, 3), 2, block_diagonal.MAX_NATIVE_BLOCK + 1, 4)
    with dispatch.recording() as ran:
        check_against_reference(block_diagonal_linear, naive_block_diagonal_linear, wide, 1e-5)
    assert ran.kernels()["block_diagonal_linear"] == dispatch.PYTORCH


@pytest.mark.parametrize("threads", [1, 3])
def test_block_diagonal_linear_weight_gradient_sums_every_threads_rows(threads):
    inputs = block_diagonal_inputs((7, 13), 4, 16, 16)
    with torch_threads(threads):
        check_against_reference(block_diagonal_linear, naive_block_diagonal_linear, inputs,
                                1e-5)


def test_block_diagonal_linear_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="not 3 blocks of 5"):
        block_diagonal_linear(torch.randn(2, 14), torch.randn(3, 5, 7))
    with pytest.raises(ValueError, match="bias of shape"):
        block_diagonal_linear(torch.randn(2, 15), torch.randn(3, 5, 7), torch.randn(20))


# ---------------------------------------------------------------------- Mamba's step size


def step_size_inputs(rows=(2, 9), rank=5, width=16, dtype=torch.float32, spread=30.0):
    """x (*rows, rank) as the dt slice of a wider (*rows, rank + 7) tensor (x_proj's output),
    weight (width, rank), bias (width,): pre-activations over the softplus's range, from about
    -spread - 20 to spread + 20, and the first row of x zero, where they are the bias exactly:
    its columns run from -90 to 90 through the threshold (20) itself."""
    wide = torch.randn(*rows, rank + 7, dtype=torch.float64) * spread / rank ** 0.5
    wide.view(-1, rank + 7)[0] = 0.0
    bias = torch.linspace(-90.0, 90.0, width, dtype=torch.float64)
    bias[width // 2] = 20.0
    return {"x": leaf(wide.to(dtype)[..., :rank]),
            "weight": leaf(torch.randn(width, rank, dtype=torch.float64).to(dtype)),
            "bias": leaf(bias.to(dtype))}


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("width", [3, 16, 37])
@pytest.mark.parametrize("rank", [1, 4, 5, 17])
def test_softplus_linear_matches_reference(rank, width, dtype, tol, kernels, monkeypatch):
    # the kernel at every rank, above the rank limit too (which only says where it pays)
    monkeypatch.setattr(step_size, "MAX_NATIVE_RANK", 64)
    inputs = step_size_inputs(rank=rank, width=width, dtype=dtype)
    assert not inputs["x"].is_contiguous()  # read in place at its row stride
    with dispatch.recording() as ran:
        check_against_reference(softplus_linear, naive_softplus_linear, inputs, tol)
    assert ran.kernels()["softplus_linear"] == kernels


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_softplus_linear_over_the_whole_softplus_range(dtype):
    """Where x is zero the pre-activation is the bias exactly: the step size there is softplus
    of -90..90 to full relative precision (the threshold 20 and its neighbours included), its
    bias gradient the slope sigmoid(bias) (1 above the threshold)."""
    bias = torch.cat([torch.linspace(-90, 90, 4001, dtype=dtype),
                      torch.tensor([-20.0, 19.999, 20.0, 20.001, 0.0], dtype=dtype)])
    x = torch.zeros(3, 2, dtype=dtype)
    weight = torch.randn(bias.numel(), 2, dtype=dtype)
    x, weight, bias = leaf(x), leaf(weight), leaf(bias)
    dt = softplus_linear(x, weight, bias)
    expected = F.softplus(bias.detach().double())
    rel = (dt.detach().double() - expected).abs() / expected.clamp(min=1e-300)
    assert (rel[:, expected > 1e-37].max() < 1e-6).item()
    (grad_bias,) = torch.autograd.grad(dt[1].sum(), bias)
    slope = torch.sigmoid(bias.detach().double()).where(bias.detach() <= 20, 1.0)
    assert_close(grad_bias, slope.to(dtype), 1e-6, "grad of bias")


def test_softplus_linear_gradcheck_fp64():
    inputs = step_size_inputs(rows=(2, 3), rank=5, width=7, dtype=torch.float64, spread=3.0)
    # off the threshold, where softplus jumps by e^-20 (finite differences would see a slope)
    inputs["bias"] = leaf(torch.randn(7, dtype=torch.float64) * 5)
    assert torch.autograd.gradcheck(softplus_linear, tuple(inputs.values()))


@pytest.mark.parametrize("layout", ["three leading dims", "transposed", "stride-0 rows",
                                    "no rows", "one vector"])
def test_softplus_linear_without_bias_and_at_any_strides(layout):
    x = {"three leading dims": (torch.randn(2, 3, 4, 6) * 3)[..., 1:5],
         "transposed": torch.randn(4, 10).t() * 3,  # copied: the kernel reads whole rows
         "stride-0 rows": torch.randn(1, 4).expand(6, 4),
         "no rows": torch.randn(0, 4),
         "one vector": torch.randn(4)}[layout]
    inputs = {"x": leaf(x), "weight": leaf(torch.randn(9, 4)), "bias": None}
    check_against_reference(softplus_linear, naive_softplus_linear, inputs, 1e-5)


@pytest.mark.parametrize("threads", [1, 3])
def test_softplus_linear_weight_gradient_sums_every_threads_rows(threads):
    """The native backward keeps one weight- and bias-gradient part per thread; the caller
    sums them."""
    inputs = step_size_inputs(rows=(7, 13), rank=6, width=20)
    with torch_threads(threads):
        check_against_reference(softplus_linear, naive_softplus_linear, inputs, 1e-5)


def test_softplus_linear_forced_fallback_matches_the_native_kernel(kernels):
    if kernels == native.PYTORCH:
        pytest.skip("compares the native kernel with the fallback")
    inputs = step_size_inputs(rank=4, width=37)
    with dispatch.recording() as ran:
        outs, grads = outputs_and_grads(softplus_linear, inputs)
    with dispatch.disabled(), dispatch.recording() as ran_off:
        ref_outs, ref_grads = outputs_and_grads(softplus_linear, inputs)
    assert ran_off.kernels() == {"softplus": dispatch.PYTORCH, "softplus_linear": dispatch.PYTORCH}
    assert ran.kernels() == {"softplus_linear": dispatch.NATIVE}
    assert_close(outs[0], ref_outs[0], 1e-5)
    for name, grad in ref_grads.items():
        assert_close(grads[name], grad, 1e-5, f"grad of {name}")


def test_softplus_linear_above_the_rank_limit_runs_the_fallback(kernels):
    at_limit = step_size_inputs(rank=step_size.MAX_NATIVE_RANK, width=8)
    above = step_size_inputs(rank=step_size.MAX_NATIVE_RANK + 1, width=8)
    with dispatch.recording() as ran:
        softplus_linear(**at_limit)
    assert ran.kernels()["softplus_linear"] == kernels
    with dispatch.recording() as ran:
        check_against_reference(softplus_linear, naive_softplus_linear, above, 1e-5)
    assert ran.kernels()["softplus_linear"] == dispatch.PYTORCH


def test_softplus_linear_under_autocast_is_the_bf16_product_then_fp32():
    """Under autocast Mamba's step size is what the mixer always computed: dt_proj as
    autocast's bf16 product, then softplus in fp32 (the fallback, recorded as "pytorch")."""
    inputs = step_size_inputs(rank=4, width=16, spread=3.0)
    autocast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)

    def as_before(x, weight, bias):
        return F.softplus(F.linear(x, weight, bias).float())

    with dispatch.recording() as ran:
        outs, grads = outputs_and_grads(softplus_linear, inputs, forward_context=autocast())
    ref_outs, ref_grads = outputs_and_grads(as_before, inputs, forward_context=autocast())
    assert ran.kernels()["softplus_linear"] == dispatch.PYTORCH
    assert outs[0].dtype == torch.float32 and torch.equal(outs[0], ref_outs[0])
    for name, grad in ref_grads.items():
        assert torch.equal(grads[name], grad), name


def test_softplus_linear_of_bf16_inputs_runs_the_fallback_in_fp32():
    inputs = {k: leaf(v.bfloat16()) for k, v in step_size_inputs(rank=4, spread=3.0).items()}
    with dispatch.recording() as ran:
        dt = softplus_linear(**inputs)
    assert ran.kernels()["softplus_linear"] == dispatch.PYTORCH and dt.dtype == torch.float32
    assert_close(dt, F.softplus(F.linear(*(t.detach() for t in inputs.values())).float()), 1e-6)


# ---------------------------------------------------------------------------------- RoPE


def naive_rotate_heads(x: Tensor, start: int, theta: float, rotary_dim: int) -> Tensor:
    """Each head through `apply_rope` in the (B, heads, N, hd) layout, the rest concatenated."""
    cos, sin = rope_tables(torch.arange(start, start + x.shape[1]), rotary_dim, theta)
    heads_first = x.transpose(1, 2)
    rotated = apply_rope(heads_first[..., :rotary_dim].double(), cos.double(), sin.double())
    out = torch.cat((rotated.to(x.dtype), heads_first[..., rotary_dim:]), dim=-1)
    return out.transpose(1, 2)


@pytest.mark.parametrize("rotary_dim", [0, 4, 8])
@pytest.mark.parametrize("start", [0, 37])
def test_rotate_heads_matches_reference(rotary_dim, start):
    inputs = {"x": leaf(torch.randn(2, 9, 3, 8) * 2)}
    check_against_reference(lambda x: rotate_heads(x, start, 500.0, rotary_dim),
                            lambda x: naive_rotate_heads(x, start, 500.0, rotary_dim), inputs,
                            1e-5)


def test_rotate_heads_gradcheck_fp64():
    x = leaf(torch.randn(2, 5, 2, 6, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda x: rotate_heads(x, 2, 100.0, 4), (x,))


def test_over_segments_carries_the_state_across_segments(monkeypatch):
    """The segment loop of the recurrent mixers: a running sum cut into segments of 3 (the
    carried state: the sum so far) is the running sum of the whole sequence."""
    import trials.ops._memory as memory

    monkeypatch.setattr(memory, "TEMP_BYTES", 3)
    x = torch.randn(2, 10, 4)
    seen = []

    def running_sum(part, total):
        seen.append((part.shape[1], total is None))
        out = part.cumsum(dim=1) + (0 if total is None else total)
        return out, out[:, -1:]

    parts = memory.over_segments(x, 1, running_sum)
    assert seen == [(3, True), (3, False), (3, False), (1, False)]
    torch.testing.assert_close(memory.join_segments(parts), x.cumsum(dim=1))
    assert memory.join_segments(parts[:1]) is parts[0]  # one segment: not copied


# ----------------------------------------------------------------------------- attention


def attention_inputs(batch=2, heads=4, group=1, length=33, head_dim=16, scale=1.0,
                     dtype=torch.float32):
    """q (B, H, N, hd), k and v (B, H / group, N, hd), laid out as the mixers pass them:
    transposed from the projections' (B, N, heads, hd) layout (leaves with those strides)."""
    def projected(n_heads):
        return leaf((torch.randn(batch, length, n_heads, head_dim) * scale).to(dtype)
                    .transpose(1, 2))

    return {"q": projected(heads), "k": projected(heads // group),
            "v": projected(heads // group)}


@pytest.mark.parametrize("length,head_dim,group,window", [
    (1, 16, 1, None), (7, 8, 2, None), (33, 16, 4, None), (64, 16, 1, None),
    (70, 32, 2, None), (130, 64, 1, None), (45, 16, 2, 1), (70, 16, 1, 7), (100, 8, 4, 33),
    (64, 32, 2, 64), (20, 16, 1, 100), (300, 16, 2, 150), (270, 8, 1, None),
])
def test_causal_attention_matches_reference(length, head_dim, group, window):
    """Lengths that are not a multiple of the kernel's blocks (8 or 16 queries, chunks of 128
    keys, 32 x 64 tiles), one position, grouped KV heads, windows shorter than, equal to and
    longer than N, and across chunks."""
    inputs = attention_inputs(length=length, head_dim=head_dim, group=group)
    check_against_reference(lambda q, k, v: causal_attention(q, k, v, window),
                            lambda q, k, v: naive_causal_attention(q, k, v, window), inputs,
                            1e-5)


def test_causal_attention_is_stable_for_large_scores():
    """Scores in the hundreds: the row maximum and the kept log-sum-exp keep every exp finite."""
    inputs = attention_inputs(length=40, group=2, scale=8.0)
    check_against_reference(causal_attention, naive_causal_attention, inputs, 1e-4)


def test_causal_attention_takes_any_strides():
    """Contiguous inputs, the mixers' transposed views, and views whose head dim is strided
    (copied) give the same outputs and gradients."""
    base = attention_inputs(length=19, group=2)
    dense = {name: leaf(t.detach().contiguous()) for name, t in base.items()}
    doubled = {name: leaf(torch.stack((t.detach(), t.detach()), dim=-1).flatten(-2))
               for name, t in base.items()}  # channels c0 c0 c1 c1 ...
    strided = {name: t[..., ::2] for name, t in doubled.items()}  # the head dim 2 apart
    for inputs in (base, strided):
        fast_outs, fast_grads = outputs_and_grads(causal_attention, inputs)
        ref_outs, ref_grads = outputs_and_grads(causal_attention, dense)
        assert_close(fast_outs[0], ref_outs[0], 1e-6)
        for name in "qkv":
            assert_close(fast_grads[name], ref_grads[name], 1e-6, f"grad of {name}")


def test_causal_attention_gradcheck_fp64():
    for window in (None, 3):
        inputs = attention_inputs(batch=1, heads=4, group=2, length=9, head_dim=8,
                                  dtype=torch.float64)
        assert torch.autograd.gradcheck(
            lambda q, k, v: causal_attention(q, k, v, window),
            (inputs["q"], inputs["k"], inputs["v"]))


@pytest.mark.parametrize("threads", [1, 3])
def test_causal_attention_with_several_threads(threads):
    """One (batch, KV head) slice per thread: each slice's dK and dV sum its whole group."""
    inputs = attention_inputs(batch=3, heads=4, group=2, length=37)
    with torch_threads(threads):
        check_against_reference(causal_attention, naive_causal_attention, inputs, 1e-5)


def _ran(fn, *args, **kwargs) -> str:
    with dispatch.recording() as ran:
        fn(*args, **kwargs)
    return ran.kernels()["attention"]


def test_causal_attention_records_what_ran(kernels):
    """fp32 and fp64 at head dims 8/16/32/64: the native kernel (when the library is built);
    another head dim, head dim 64 past 256 positions, bf16 and autocast: SDPA, recorded as
    "pytorch"."""
    native_when_built = kernels
    for head_dim, dtype in ((8, torch.float32), (64, torch.float64)):
        inputs = attention_inputs(length=5, head_dim=head_dim, dtype=dtype)
        assert _ran(causal_attention, **inputs) == native_when_built
    inputs = attention_inputs(length=5, head_dim=12)
    assert _ran(causal_attention, **inputs) == dispatch.PYTORCH
    long_and_wide = attention_inputs(batch=1, heads=1, length=257, head_dim=64)
    assert _ran(causal_attention, **long_and_wide) == dispatch.PYTORCH
    assert _ran(causal_attention, **attention_inputs(batch=1, heads=1, length=257)) \
        == native_when_built
    check_against_reference(causal_attention, naive_causal_attention, inputs, 1e-5)
    bf16 = attention_inputs(length=5, dtype=torch.bfloat16)
    assert _ran(causal_attention, **bf16) == dispatch.PYTORCH
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert _ran(causal_attention, **attention_inputs(length=5)) == dispatch.PYTORCH


def test_hnas_kernels_pytorch_runs_sdpa(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_CHOICE, dispatch.PYTORCH)
    inputs = attention_inputs(length=11, group=2)
    assert _ran(causal_attention, **inputs) == dispatch.PYTORCH
    check_against_reference(causal_attention, naive_causal_attention, inputs, 1e-5)


def test_attention_under_autocast_is_sdpa_under_autocast():
    """The model's behaviour under autocast is unchanged: SDPA's own bf16 computation."""
    inputs = attention_inputs(length=13, group=2)
    autocast = functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16)
    outs, grads = outputs_and_grads(causal_attention, inputs, forward_context=autocast())
    with dispatch.disabled():
        ref_outs, ref_grads = outputs_and_grads(causal_attention, inputs,
                                                forward_context=autocast())
    assert torch.equal(outs[0], ref_outs[0])
    for name in "qkv":
        assert torch.equal(grads[name], ref_grads[name])


def test_causal_attention_rejects_an_empty_window():
    with pytest.raises(ValueError, match="window=0 must be at least 1"):
        causal_attention(**attention_inputs(length=3), window=0)
