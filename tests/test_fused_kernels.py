"""The fused GPU libraries behind the ops' signatures (`trials.ops.dispatch`), without a GPU.

Two kinds of check, because none of the libraries runs its kernels on this CPU:

- The argument mapping, always: each library's module is replaced by a stand-in that implements
  the maths the library documents, in its own layout (channels before time for mamba_ssm and
  causal_conv1d, (N, P) states for flash-linear-attention, log decays for both fla kernels),
  and checks the layout constraints of the real kernels (causal_conv1d's channels-last strides,
  its widths 2-4). `HNAS_KERNELS=interpret` lets the dispatch offer the libraries CPU tensors;
  every test asserts that the stand-in was called, so none can pass through the fallback. The
  stand-ins of mamba_ssm's selective scan and causal_conv1d detach the states they return, as
  the real functions give them no gradient, so the tests prove that ours do not depend on it.
- flash-linear-attention's real code, when fla-core and triton are installed: in a child process
  with `TRITON_INTERPRET=1` (Triton reads it when the kernels are defined, at import):
  `fused_recurrent_hgrn` runs its Triton kernels in the interpreter, forward and backward, through
  `linear_scan`. `chunk_simple_gla` does not run in the interpreter (fla-core 0.6.0:
  `InterpreterError: AttributeError("'int' object has no attribute 'to'")` in
  fla/ops/common/chunk_h.py, `chunk_fwd_kernel_h`, whose `i_t.to(tl.int64)` needs the loop
  index to be a Triton tensor, as only the compiler makes it), so `ssd` is checked there against
  fla's own pure-PyTorch reference of the same function (`naive_chunk_simple_gla`) in its place.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from search_spaces import ArchConfig
from test_ops import (
    assert_close,
    check_against_reference,
    leaf,
    linear_scan_inputs,
    selective_scan_inputs,
    ssd_inputs,
)
from trials.builder import build_model
from trials.ops import (
    causal_conv1d,
    dispatch,
    linear_scan,
    naive_causal_conv1d,
    naive_linear_scan,
    naive_selective_scan,
    naive_ssd,
    selective_scan,
    ssd,
)
from trials.ops.conv import CAUSAL_CONV1D
from trials.ops.scan import FLA_HGRN
from trials.ops.selective_scan import MAMBA_SSM
from trials.ops.ssd import FLA_SIMPLE_GLA
from trials.tasks import MQAR, Suite, SuiteEntry
from trials.train import Budget, run_trial

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------- stand-ins of the libraries


def reference_selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                                delta_softplus=False, return_last_state=False):
    """mamba_ssm's documented selective_scan_fn: u, delta, z (B, D, L); A (D, N); B, C
    (B, N, L); last_state (B, D, N) without a gradient."""
    batch, dim, length = u.shape
    assert A.shape[0] == dim and B.shape == C.shape == (batch, A.shape[1], length)
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    h = u.new_zeros(batch, dim, A.shape[1])
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h \
            + (delta[:, :, t] * u[:, :, t])[:, :, None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return (y, h.detach()) if return_last_state else y


def reference_causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None,
                               return_final_states=False, final_states_out=None,
                               activation=None):
    """causal_conv1d's documented causal_conv1d_fn, x (B, C, L), with its C++ layout checks."""
    batch, dim, _ = x.shape
    width = weight.shape[1]
    assert 2 <= width <= 4, "causal_conv1d only supports width between 2 and 4"
    channels_last = x.stride(1) == 1 and x.stride(2) > 1
    if channels_last:
        assert dim % 8 == 0, "channels-last needs channels divisible by 8"
    if initial_states is not None:
        assert channels_last, "initial_states needs the channels-last layout"
        assert initial_states.shape == (batch, dim, width - 1)
        assert initial_states.stride(1) == 1, "initial_states must be channels-last too"
        history = initial_states
    else:
        history = x.new_zeros(batch, dim, width - 1)
    y = F.conv1d(torch.cat([history, x], dim=2), weight[:, None, :], bias, groups=dim)
    return F.silu(y) if activation in ("silu", "swish") else y


def reference_chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                               output_final_state=False, **unused):
    """fla's documented chunk_simple_gla: q, k (B, T, H, K), v (B, T, H, V), g (B, T, H) log
    decays; S_t = exp(g_t) S_{t-1} + k_t^T v_t, o_t = scale q_t S_t; states (B, H, K, V)."""
    batch, length, heads, dk = q.shape
    scale = dk ** -0.5 if scale is None else scale
    S = q.new_zeros(batch, heads, dk, v.shape[-1]) if initial_state is None else initial_state
    outs = []
    for t in range(length):
        S = torch.exp(g[:, t])[..., None, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        outs.append(scale * (q[:, t, :, :, None] * S).sum(-2))
    return torch.stack(outs, dim=1), (S if output_final_state else None)


def reference_fused_recurrent_hgrn(x, g, initial_state=None, output_final_state=False,
                                   cu_seqlens=None):
    """fla's documented HGRN recurrence: h_t = exp(g_t) h_{t-1} + x_t over (B, T, D)."""
    h = x.new_zeros(x.shape[0], x.shape[2]) if initial_state is None else initial_state
    outs = []
    for t in range(x.shape[1]):
        h = torch.exp(g[:, t]) * h + x[:, t]
        outs.append(h)
    return torch.stack(outs, dim=1), (h if output_final_state else None)


STAND_INS = {
    MAMBA_SSM: reference_selective_scan_fn,
    CAUSAL_CONV1D: reference_causal_conv1d_fn,
    FLA_SIMPLE_GLA: reference_chunk_simple_gla,
    FLA_HGRN: reference_fused_recurrent_hgrn,
}


def fake_module(monkeypatch, name: str, **attributes) -> None:
    """Put a module (and its parent packages) in sys.modules, found as if installed."""
    parts = name.split(".")
    for depth in range(1, len(parts) + 1):
        module_name = ".".join(parts[:depth])
        module = types.ModuleType(module_name)
        module.__spec__ = importlib.machinery.ModuleSpec(module_name, None, is_package=True)
        if depth == len(parts):
            module.__dict__.update(attributes)
        monkeypatch.setitem(sys.modules, module_name, module)


@pytest.fixture
def libraries(monkeypatch):
    """Every fused library replaced by its stand-in, offered CPU tensors; returns call counts."""
    calls = dict.fromkeys(STAND_INS, 0)

    def counted(fused, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            calls[fused] += 1
            return fn(*args, **kwargs)
        return wrapper

    for fused, fn in STAND_INS.items():
        fake_module(monkeypatch, fused.module, **{fused.function: counted(fused, fn)})
    monkeypatch.setattr(dispatch, "_loaded", {})
    monkeypatch.setattr(dispatch, "_warned", set())
    monkeypatch.setenv(dispatch.ENV_CHOICE, dispatch.INTERPRET)
    return calls


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ------------------------------------------------------------------------ the rule


def test_the_rule_picks_each_library(libraries):
    chosen = dispatch.planned_kernels("cuda")
    libraries = {"causal_conv1d": "causal_conv1d", "linear_scan": "fla.fused_recurrent_hgrn",
                 "selective_scan": "mamba_ssm", "ssd": "fla.chunk_simple_gla"}
    # the ops around the GEMMs have no GPU library: PyTorch on CUDA, the native kernel on CPU
    around = ("add_rms_norm", "attention", "block_diagonal_linear", "fft_long_conv", "glu",
              "rglru_gates", "rms_norm", "rope", "softplus", "softplus_linear")
    assert chosen == {**libraries, **dict.fromkeys(around, "pytorch")}
    assert dispatch.planned_kernels("cpu") == {**chosen, **dict.fromkeys(around, dispatch.NATIVE)}


def test_hnas_kernels_pytorch_forces_the_fallback_silently(libraries, monkeypatch, recwarn):
    monkeypatch.setenv(dispatch.ENV_CHOICE, "pytorch")
    assert set(dispatch.planned_kernels("cuda").values()) == {dispatch.PYTORCH}
    inputs = selective_scan_inputs(length=9, h0=False)
    check_against_reference(selective_scan, naive_selective_scan, inputs)
    assert libraries[MAMBA_SSM] == 0
    assert not [w for w in recwarn if "hybrid-nas" in str(w.message)]


def test_disabled_forces_the_fallback(libraries):
    with dispatch.disabled():
        assert set(dispatch.planned_kernels("cuda").values()) == {dispatch.PYTORCH}
        selective_scan(**selective_scan_inputs(length=5, h0=False))
    assert libraries[MAMBA_SSM] == 0


def test_an_unsupported_dtype_warns_once_and_falls_back(libraries):
    inputs = linear_scan_inputs(length=7, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="does not take torch.float64"):
        check_against_reference(linear_scan, naive_linear_scan, inputs)
    assert libraries[FLA_HGRN] == 0
    with warnings_as_errors():
        linear_scan(**inputs)  # the second call is silent


def test_a_broken_install_warns_once_and_falls_back(monkeypatch):
    # the package is there but the module with the function is not: a broken install
    fake_module(monkeypatch, "mamba_ssm")
    monkeypatch.setattr(dispatch, "_loaded", {})
    monkeypatch.setattr(dispatch, "_warned", set())
    monkeypatch.setenv(dispatch.ENV_CHOICE, dispatch.INTERPRET)
    with pytest.warns(RuntimeWarning, match="mamba_ssm is installed but"):
        assert dispatch.fused_function(MAMBA_SSM) is None
    inputs = selective_scan_inputs(length=6, h0=False)
    with warnings_as_errors():
        check_against_reference(selective_scan, naive_selective_scan, inputs)


def test_an_absent_library_is_silent(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    monkeypatch.setattr(dispatch, "_loaded", {})
    with warnings_as_errors():
        assert dispatch.fused_function(MAMBA_SSM) is None


@contextlib.contextmanager
def warnings_as_errors():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ------------------------------------------------------- the argument mapping, per op


@pytest.mark.parametrize("gate", [False, True])
def test_selective_scan_through_mamba_ssm(libraries, gate):
    inputs = selective_scan_inputs(length=11, h0=False, gate=gate)
    check_against_reference(functools.partial(selective_scan, return_state=True),
                            functools.partial(naive_selective_scan, return_state=True), inputs)
    check_against_reference(selective_scan, naive_selective_scan, inputs)
    assert libraries[MAMBA_SSM] == 2  # once per check (its gradients come from that call)


@pytest.mark.parametrize("return_state", [False, True])
def test_selective_scan_with_an_initial_state_through_mamba_ssm(libraries, return_state):
    inputs = selective_scan_inputs(length=8, h0=True)
    check_against_reference(functools.partial(selective_scan, return_state=return_state),
                            functools.partial(naive_selective_scan, return_state=return_state),
                            inputs)
    assert libraries[MAMBA_SSM] == 1


def test_selective_scan_chained_through_mamba_ssm_equals_one_call(libraries):
    inputs = {k: v.detach() for k, v in selective_scan_inputs(length=20, h0=False).items()
              if v is not None}
    whole, final = selective_scan(**inputs, return_state=True)
    first = {k: (v[:, :9] if v.dim() == 3 and k != "A" else v) for k, v in inputs.items()}
    second = {k: (v[:, 9:] if v.dim() == 3 and k != "A" else v) for k, v in inputs.items()}
    y1, h1 = selective_scan(**first, return_state=True)
    y2, h2 = selective_scan(**second, h0=h1, return_state=True)
    assert_close(torch.cat([y1, y2], 1), whole, what="outputs")
    assert_close(h2, final, what="state")
    assert libraries[MAMBA_SSM] == 3


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("silu", [False, True])
def test_causal_conv1d_through_causal_conv1d(libraries, with_state, silu):
    inputs = {"x": leaf(torch.randn(2, 9, 16)), "weight": leaf(torch.randn(16, 4)),
              "bias": leaf(torch.randn(16)),
              "state": leaf(torch.randn(2, 16, 3)) if with_state else None}
    kwargs = {"return_state": True, "silu": silu}
    check_against_reference(functools.partial(causal_conv1d, **kwargs),
                            functools.partial(naive_causal_conv1d, **kwargs), inputs)
    assert libraries[CAUSAL_CONV1D] == 1


@pytest.mark.parametrize("channels,width", [(12, 4), (16, 5)])
def test_causal_conv1d_outside_the_library_limits_runs_the_pytorch_path(libraries, channels,
                                                                         width):
    inputs = {"x": leaf(torch.randn(2, 9, channels)),
              "weight": leaf(torch.randn(channels, width)), "bias": None}
    with dispatch.recording() as ran:
        check_against_reference(causal_conv1d, naive_causal_conv1d, inputs)
    assert libraries[CAUSAL_CONV1D] == 0
    assert ran.kernels() == {"causal_conv1d": dispatch.PYTORCH}


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("groups", [1, 2])
def test_ssd_through_chunk_simple_gla(libraries, with_h0, groups):
    inputs = ssd_inputs(length=10, groups=groups, h0=with_h0)
    check_against_reference(functools.partial(ssd, return_state=True),
                            functools.partial(naive_ssd, return_state=True), inputs)
    assert libraries[FLA_SIMPLE_GLA] == 1


@pytest.mark.parametrize("with_h0", [False, True])
def test_linear_scan_through_hgrn(libraries, with_h0):
    inputs = linear_scan_inputs(length=12, h0=with_h0)
    check_against_reference(functools.partial(linear_scan, return_state=True),
                            functools.partial(naive_linear_scan, return_state=True), inputs)
    assert libraries[FLA_HGRN] == 1


def test_linear_scan_through_hgrn_takes_a_zero_decay(libraries):
    inputs = linear_scan_inputs(length=6, h0=True)
    a = inputs["a"].detach().clone()
    a[:, 3] = 0.0  # an exact reset: log 0 must not reach the gradient as 0 * inf
    inputs["a"] = leaf(a)
    fast = linear_scan(**inputs)
    assert_close(fast, naive_linear_scan(**inputs))
    grads = torch.autograd.grad(fast.sum(), [inputs["b"], inputs["h0"]])
    assert all(torch.isfinite(g).all() for g in grads)
    assert libraries[FLA_HGRN] == 1


def test_a_model_trains_the_same_through_the_libraries(libraries):
    """Mamba, Mamba-2 and RG-LRU layers (every op with a library) in one model: the loss and
    every parameter's gradient equal the PyTorch path's, and every library was used."""
    arch = ArchConfig.from_pattern("M M2 R", d_model=32, n_heads=4, d_state=8, m2_d_state=8,
                                   m2_head_dim=16)
    tokens = torch.randint(0, 64, (2, 13))

    def loss_and_grads():
        model = build_model(arch, seed=0)
        loss = model(tokens).logits.float().square().mean()
        return loss, torch.autograd.grad(loss, list(model.parameters()))

    fused_loss, fused_grads = loss_and_grads()
    with dispatch.disabled():
        loss, grads = loss_and_grads()
    assert_close(fused_loss, loss, what="loss")
    for i, (a, b) in enumerate(zip(fused_grads, grads)):
        assert_close(a, b, what=f"gradient {i}")
    assert all(libraries.values()), libraries


TINY_SUITE = Suite(name="tiny", entries=(
    SuiteEntry(task=MQAR(seq_len=16, num_kv_pairs=2, vocab_size=16), n_train=16, n_test=8),))
TINY_BUDGET = Budget(steps=2, batch_size=4, decode_context=0)


def test_a_trial_records_the_kernels_that_ran(libraries):
    """Mamba's conv (2 x 12 = 24 channels) fits causal_conv1d, Hyena's (3 x 12 = 36) does
    not: the conv op ran both, and the trial says so; ops the model has not are absent."""
    arch = ArchConfig.from_pattern("M H", d_model=12, n_heads=2, d_state=4)
    result = run_trial(arch, TINY_SUITE, TINY_BUDGET)
    assert result.status != "failed", result.failure
    assert result.kernels == {
        "causal_conv1d": f"{CAUSAL_CONV1D.name}{dispatch.SEVERAL}{dispatch.PYTORCH}",
        "selective_scan": MAMBA_SSM.name,
        # no GPU library: on the CPU these run the native kernels
        "add_rms_norm": dispatch.NATIVE, "fft_long_conv": dispatch.NATIVE,
        "glu": dispatch.NATIVE, "rms_norm": dispatch.NATIVE, "softplus_linear": dispatch.NATIVE}
    assert libraries[CAUSAL_CONV1D] and libraries[MAMBA_SSM]


def test_an_fp64_trial_records_pytorch_where_the_libraries_take_fp32_only(libraries):
    """The libraries take fp32: in an fp64 trial the convs and Mamba's scan run PyTorch, while
    RG-LRU, which computes its recurrence in fp32 whatever the precision, runs fla's."""
    arch = ArchConfig.from_pattern("M R", d_model=16, n_heads=2, d_state=4)
    with pytest.warns(RuntimeWarning, match="does not take torch.float64"):
        result = run_trial(arch, TINY_SUITE, TINY_BUDGET, precision="64-true")
    assert result.status != "failed", result.failure
    assert result.kernels == {"add_rms_norm": dispatch.NATIVE,
                              "block_diagonal_linear": dispatch.NATIVE,
                              "causal_conv1d": dispatch.PYTORCH, "linear_scan": FLA_HGRN.name,
                              "selective_scan": dispatch.PYTORCH, "glu": dispatch.NATIVE,
                              "rglru_gates": dispatch.NATIVE, "rms_norm": dispatch.NATIVE,
                              "softplus_linear": dispatch.NATIVE}
    assert libraries[CAUSAL_CONV1D] == libraries[MAMBA_SSM] == 0 < libraries[FLA_HGRN]


# ----------------------------------------- flash-linear-attention's own code, interpreted

FLA_MISSING = next((name for name in ("triton", "fla") if importlib.util.find_spec(name) is None),
                   None)

CHILD = r"""
import json, os, functools
import torch
from triton.runtime.autotuner import Autotuner
# Triton's interpreter has no benchmarker: the autotuner takes the first of its configs
first = Autotuner.prune_configs
Autotuner.prune_configs = lambda self, kwargs: first(self, kwargs)[:1]
from trials.ops import dispatch, linear_scan, naive_linear_scan, ssd, naive_ssd
from trials.ops.ssd import FLA_SIMPLE_GLA
from fla.ops.simple_gla.naive import naive_chunk_simple_gla

def worst(fast, naive, inputs):
    '''max relative error over the outputs and every input's gradient'''
    errors = []
    grads = []
    for fn in (fast, naive):
        outs = fn(**inputs)
        gen = torch.Generator().manual_seed(1)
        loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outs)
        leaves = [v for v in inputs.values() if v is not None]
        grads.append((outs, torch.autograd.grad(loss, leaves)))
    for a, b in zip(grads[0][0] + grads[0][1], grads[1][0] + grads[1][1]):
        errors.append(((a - b).abs().max() / b.abs().max().clamp_min(1)).item())
    return max(errors)

torch.manual_seed(0)
leaf = lambda t: t.detach().requires_grad_()
result = {"kernels": dispatch.planned_kernels("cpu")}
scan_inputs = {"a": leaf(torch.rand(2, 19, 6) * 0.9 + 0.05), "b": leaf(torch.randn(2, 19, 6)),
               "h0": leaf(torch.randn(2, 6))}
result["linear_scan"] = worst(functools.partial(linear_scan, return_state=True),
                              functools.partial(naive_linear_scan, return_state=True),
                              scan_inputs)

def library_reference(q, k, v, g, scale, initial_state, output_final_state):
    return naive_chunk_simple_gla(q, k, v, g, initial_state=initial_state,
                                  output_final_state=output_final_state, scale=scale)

dispatch._loaded[FLA_SIMPLE_GLA] = library_reference
ssd_inputs = {"x": leaf(torch.randn(2, 21, 4, 3)), "dt": leaf(torch.rand(2, 21, 4) + 1e-3),
              "A": leaf(-torch.rand(4) * 2 - 0.05), "B": leaf(torch.randn(2, 21, 2, 5)),
              "C": leaf(torch.randn(2, 21, 2, 5)), "D": leaf(torch.randn(4)),
              "h0": leaf(torch.randn(2, 4, 3, 5))}
result["ssd"] = worst(functools.partial(ssd, return_state=True),
                      functools.partial(naive_ssd, return_state=True), ssd_inputs)
print(json.dumps(result))
"""


@pytest.mark.skipif(FLA_MISSING is not None, reason=f"{FLA_MISSING} is not installed "
                    "(pip install hybrid-nas[gpu]); the stand-in tests above cover the mapping")
def test_fla_kernels_in_the_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", dispatch.ENV_CHOICE: dispatch.INTERPRET,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["kernels"]["linear_scan"] == FLA_HGRN.name
    assert result["kernels"]["ssd"] == FLA_SIMPLE_GLA.name
    assert result["linear_scan"] < 1e-4, result
    assert result["ssd"] < 1e-4, result
