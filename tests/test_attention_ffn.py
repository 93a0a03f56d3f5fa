"""Attention (A), local attention (L), Zamba's shared block (S), SwiGLU and MoE against naive
references written out here; decoding against the parallel form; the cost model's counts."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from search_spaces import ArchConfig
from search_spaces.cost.attention import attention, shared_invocation, shared_weights
from search_spaces.cost.ffn import mlp, moe
from trials.builder import build_model
from trials.ffn.mlp import SwiGLU
from trials.ffn.moe import MoE
from trials.mixers.attention import Attention
from trials.mixers.base import state_bytes
from trials.mixers.local_attention import LocalAttention
from trials.mixers.shared_block import SharedAttentionBlock, SharedBlockInvocation
from trials.ops import dispatch
from trials.ops.rotary import rotate, rotate_heads

THETA = 10000.0


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# -- naive references ----------------------------------------------------------------------------

def naive_rope(x, start, theta=THETA):
    """Pairs (i, i + hd/2) as complex numbers, multiplied by e^(i * pos * theta^(-2i/hd))."""
    half = x.shape[-1] // 2
    pos = torch.arange(start, start + x.shape[-2], dtype=torch.float64)
    freq = theta ** (-2 * torch.arange(half, dtype=torch.float64) / x.shape[-1])
    angle = pos[:, None] * freq
    z = torch.complex(x[..., :half].double(), x[..., half:].double()) \
        * torch.polar(torch.ones_like(angle), angle)
    return torch.cat((z.real, z.imag), dim=-1).to(x.dtype)


def naive_attention(core, x, window=None):
    """Full (N, N) scores, an explicit causal (optionally banded) mask, KV heads repeated."""
    B, N, _ = x.shape
    H, KV, hd = core.n_heads, core.n_kv_heads, core.head_dim
    q = naive_rope(core.q_proj(x).view(B, N, H, hd).transpose(1, 2), 0, core.rope_theta)
    k = naive_rope(core.k_proj(x).view(B, N, KV, hd).transpose(1, 2), 0, core.rope_theta)
    v = core.v_proj(x).view(B, N, KV, hd).transpose(1, 2)
    k, v = k.repeat_interleave(H // KV, dim=1), v.repeat_interleave(H // KV, dim=1)
    t = torch.arange(N)
    distance = t[:, None] - t[None, :]  # query position minus key position
    allowed = distance >= 0 if window is None else (distance >= 0) & (distance < window)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~allowed, float("-inf"))
    o = scores.softmax(dim=-1) @ v  # (B, H, N, hd)
    return core.o_proj(o.transpose(1, 2).reshape(B, N, H * hd))


def decode(mixer, x, max_len=None, emb=None, dtype=None):
    """Token-by-token outputs (B, N, d) of `mixer` through init_state/step."""
    B, N, _ = x.shape
    state = mixer.init_state(B, max_len or N, dtype=dtype)
    outputs = []
    with torch.no_grad():
        for t in range(N):
            if emb is None:
                y_t, state = mixer.step(x[:, t], state)
            else:
                y_t, state = mixer.step(x[:, t], state, emb[:, t])
            outputs.append(y_t)
    return torch.stack(outputs, dim=1), state


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op produces while active."""

    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


# -- rotary --------------------------------------------------------------------------------------

def test_rope_matches_complex_rotation_and_depends_only_on_relative_position():
    x = randn(2, 3, 9, 8)
    torch.testing.assert_close(rotate(x, 5, THETA), naive_rope(x, 5))
    # a single decoding position is the matching slice of the full rotation
    torch.testing.assert_close(rotate(x[:, :, 4:5], 4, THETA), rotate(x, 0, THETA)[:, :, 4:5])
    q, k = randn(8, seed=1).view(1, 1, 1, 8), randn(8, seed=2).view(1, 1, 1, 8)
    scores = [(rotate(q, m, THETA) * rotate(k, n, THETA)).sum() for m, n in ((3, 1), (40, 38))]
    torch.testing.assert_close(scores[0], scores[1])
    assert not torch.allclose((rotate(q, 3, THETA) * rotate(k, 0, THETA)).sum(), scores[0])
    assert rotate(x.bfloat16(), 100, THETA).dtype == torch.bfloat16


def test_rope_gradient_is_the_opposite_rotation_and_tables_come_from_any_mode():
    x = randn(2, 3, 9, 8).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    weights = randn(2, 3, 9, 8, seed=3)
    (rotate(x, 7, THETA) * weights).sum().backward()
    (naive_rope(x_ref, 7).float() * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad)
    # the cached tables, first built under inference mode, still serve a training step
    with torch.inference_mode():
        rotate(randn(1, 1, 4, 6), 900, THETA)
    y = rotate(randn(1, 1, 3, 6).requires_grad_(), 901, THETA)
    y.sum().backward()


# -- global attention ----------------------------------------------------------------------------

@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_attention_matches_naive_softmax(n_kv_heads):
    torch.manual_seed(0)
    mixer = Attention(32, 4, n_kv_heads, THETA)
    x = randn(2, 19, 32)
    torch.testing.assert_close(mixer(x), naive_attention(mixer, x), atol=1e-5, rtol=1e-5)


def test_attention_decoding_equals_forward_and_refuses_to_overflow():
    torch.manual_seed(0)
    mixer = Attention(32, 4, 2, THETA)
    x = randn(2, 11, 32)
    sequential, state = decode(mixer, x)
    torch.testing.assert_close(sequential, mixer(x), atol=1e-5, rtol=1e-5)
    assert state["pos"] == 11
    with pytest.raises(ValueError, match="max_len=11"):
        mixer.step(x[:, 0], state)


def test_bf16_cache_follows_the_fp32_model_closely():
    torch.manual_seed(0)
    mixer = Attention(32, 4, 2, THETA)
    x = randn(2, 9, 32)
    sequential, state = decode(mixer, x, dtype=torch.bfloat16)
    assert state["k"].dtype == state["v"].dtype == torch.bfloat16
    assert sequential.dtype == torch.float32
    torch.testing.assert_close(sequential, mixer(x), atol=3e-2, rtol=3e-2)


# -- local attention -----------------------------------------------------------------------------

@pytest.mark.parametrize("window, length", [(5, 3), (5, 5), (5, 6), (5, 37), (16, 100), (1, 7)])
def test_local_attention_matches_naive_banded_mask(window, length):
    torch.manual_seed(0)
    mixer = LocalAttention(32, 4, 2, THETA, window)
    x = randn(2, length, 32)
    torch.testing.assert_close(mixer(x), naive_attention(mixer, x, window), atol=1e-5, rtol=1e-5)


def test_local_attention_is_not_global_attention_past_the_window():
    torch.manual_seed(0)
    mixer = LocalAttention(32, 4, 2, THETA, window=4)
    x = randn(1, 12, 32)
    y, global_y = mixer(x), naive_attention(mixer, x)
    torch.testing.assert_close(y[:, :4], global_y[:, :4], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(y[:, 4:], global_y[:, 4:], atol=1e-3)
    # a token older than the window no longer matters
    x2 = x.clone()
    x2[:, 3] += 1.0
    torch.testing.assert_close(mixer(x2)[:, 7:], y[:, 7:], atol=1e-6, rtol=0)


@pytest.mark.parametrize("kernels", ["native", "pytorch"])
def test_local_attention_never_builds_a_length_squared_tensor(kernels):
    """With the math SDPA backend any full-length attention materialises (N, N) scores; the
    probe sees them for global attention on the PyTorch path and the naive reference, and must
    not for L, on either path (the native kernel keeps one row of scores per query: nor for
    global attention)."""
    torch.manual_seed(0)
    n, window = 1024, 8
    mixer = LocalAttention(16, 2, 1, THETA, window)
    x = randn(1, n, 16)
    path = dispatch.disabled if kernels == "pytorch" else contextlib.nullcontext

    def largest(fn, context=path):
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), context(), LargestTensor() as probe:
            fn()
        return probe.numel

    global_largest = largest(lambda: Attention.forward(mixer, x))
    assert largest(lambda: naive_attention(mixer, x, window)) >= n * n  # the probe can fail
    assert largest(lambda: mixer(x)) <= 4 * n * 2 * window
    if kernels == "pytorch":
        assert global_largest >= n * n
    else:
        assert global_largest <= 4 * n * 16


@pytest.mark.parametrize("window, length, max_len", [(4, 13, 13), (6, 21, 30), (6, 4, 4)])
def test_local_attention_decoding_equals_forward_past_the_window(window, length, max_len):
    torch.manual_seed(0)
    mixer = LocalAttention(32, 4, 2, THETA, window)
    x = randn(2, length, 32)
    sequential, state = decode(mixer, x, max_len=max_len)
    assert state["k"].shape == (2, 2, min(max_len, window), 8)
    torch.testing.assert_close(sequential, mixer(x), atol=1e-5, rtol=1e-5)


def test_local_ring_shorter_than_the_window_refuses_to_wrap():
    mixer = LocalAttention(32, 4, 2, THETA, window=8)
    _, state = decode(mixer, randn(1, 3, 32), max_len=3)
    with pytest.raises(ValueError, match="max_len=3"):
        mixer.step(randn(1, 32), state)


# -- shared attention block ----------------------------------------------------------------------

def shared_pair(d=32, seed=0):
    torch.manual_seed(seed)
    block = SharedAttentionBlock(d, n_heads=4, n_kv_heads=2, d_ff=40, rope_theta=THETA, eps=1e-5)
    return block, SharedBlockInvocation(block, d), SharedBlockInvocation(block, d)


def test_shared_block_matches_naive_composition():
    block, first, _ = shared_pair()
    x, emb = randn(2, 10, 32, seed=1), randn(2, 10, 32, seed=2)
    a = naive_attention(block.attention, block.in_norm(torch.cat((x, emb), -1)))
    m = a + block.mlp.down(torch.nn.functional.silu(block.mlp.gate(block.mlp_norm(a)))
                           * block.mlp.up(block.mlp_norm(a)))
    assert block.attention.head_dim == 16  # 2d / H
    torch.testing.assert_close(first(x, emb), first.out_proj(m), atol=1e-5, rtol=1e-5)


def test_shared_invocations_share_the_block_and_not_the_projection():
    block, first, second = shared_pair()
    assert first.block is second.block is block and first.takes_embedding
    assert not torch.equal(first.out_proj.weight, second.out_proj.weight)
    pair = torch.nn.ModuleList([first, second])
    d = 32
    assert sum(p.numel() for p in pair.parameters()) == sum(
        p.numel() for p in block.parameters()) + 2 * d * d
    x, emb = randn(2, 6, d, seed=1), randn(2, 6, d, seed=2)
    before = first(x, emb), second(x, emb)
    with torch.no_grad():
        block.attention.v_proj.weight.mul_(2)
    after = first(x, emb), second(x, emb)
    assert not torch.allclose(before[0], after[0]) and not torch.allclose(before[1], after[1])
    # both invocations' gradients accumulate into the one block
    (first(x, emb).sum() + second(x, emb).sum()).backward()
    both = block.attention.q_proj.weight.grad.clone()
    block.zero_grad()
    first(x, emb).sum().backward()
    assert not torch.allclose(both, block.attention.q_proj.weight.grad)


def test_shared_decoding_equals_forward_per_invocation():
    _, first, second = shared_pair()
    x, emb = randn(2, 9, 32, seed=1), randn(2, 9, 32, seed=2)
    for invocation in (first, second):
        sequential, state = decode(invocation, x, emb=emb)
        assert state["k"].shape == (2, 2, 9, 16)
        torch.testing.assert_close(sequential, invocation(x, emb), atol=1e-5, rtol=1e-5)


# -- FFNs ----------------------------------------------------------------------------------------

def test_moe_output_is_the_gated_sum_of_its_top_k_experts():
    torch.manual_seed(0)
    layer = MoE(16, 24, n_experts=5, top_k=2)
    x = randn(3, 7, 16)
    y, aux = layer(x)
    probs = layer.router(x.reshape(-1, 16)).softmax(-1)
    for t, token in enumerate(x.reshape(-1, 16)):
        top_p, top_e = probs[t].topk(2)
        expected = sum(p / top_p.sum() * layer.expert(int(e), token[None])[0]
                       for p, e in zip(top_p, top_e))
        torch.testing.assert_close(y.reshape(-1, 16)[t], expected, atol=1e-5, rtol=1e-5)
    assert aux.expert_counts.dtype == torch.int64 and aux.expert_counts.sum() == 21 * 2
    assert not aux.expert_counts.requires_grad


def test_block_runs_a_dense_ffn_over_segments_with_the_same_outputs(monkeypatch):
    # with a 1-byte budget the Block applies its SwiGLU one position at a time
    import trials.ops._memory as memory
    from trials.model import Block

    torch.manual_seed(0)
    block = Block(Attention(32, 4, 2, THETA), SwiGLU(32, 40), 32, 1e-5)
    x = randn(2, 9, 32).requires_grad_()
    outputs, grads = [], []
    for budget in (memory.TEMP_BYTES, 1):
        monkeypatch.setattr(memory, "TEMP_BYTES", budget)
        y, aux = block(x, x)
        assert aux is None
        outputs.append(y)
        grads.append(torch.autograd.grad((y * randn(2, 9, 32, seed=4)).sum(),
                                         [x, *block.parameters()]))
    torch.testing.assert_close(outputs[1], outputs[0])
    for g1, g0 in zip(grads[1], grads[0]):
        torch.testing.assert_close(g1, g0)


def test_moe_expert_matches_a_swiglu_with_the_same_weights():
    layer, dense = MoE(16, 24, n_experts=3, top_k=1), SwiGLU(16, 24)
    with torch.no_grad():
        dense.gate.weight.copy_(layer.w_gate[1].T)
        dense.up.weight.copy_(layer.w_up[1].T)
        dense.down.weight.copy_(layer.w_down[1].T)
    x = randn(4, 16)
    torch.testing.assert_close(layer.expert(1, x), dense(x)[0], atol=1e-6, rtol=1e-5)
    assert dense(x)[1] is None


def test_moe_with_every_expert_is_the_softmax_mixture():
    torch.manual_seed(0)
    layer = MoE(8, 12, n_experts=3, top_k=3)
    x = randn(5, 8)  # no sequence dim: any leading shape works
    probs = layer.router(x).softmax(-1)
    expected = sum(probs[:, e:e + 1] * layer.expert(e, x) for e in range(3))
    y, aux = layer(x)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    assert aux.expert_counts.tolist() == [5, 5, 5]
    torch.testing.assert_close(aux.loss, torch.tensor(1.0))  # f_e = 1/E: E * sum P_e / E


def test_moe_load_balancing_loss_on_a_hand_built_routing():
    """Router = ln(3) * identity, tokens e0, e0, e1, e2: a one-hot token puts probability
    3/6 on its expert and 1/6 on each other one, and top-1 picks its own expert.
    f = (2, 1, 1, 0) / 4;  P = (1/3, 1/4, 1/4, 1/6);  loss = 4 * (1/6 + 1/16 + 1/16) = 7/6."""
    layer = MoE(4, 6, n_experts=4, top_k=1)
    with torch.no_grad():
        layer.router.weight.copy_(math.log(3) * torch.eye(4))
    x = torch.eye(4)[[0, 0, 1, 2]][None]  # (1, 4, 4)
    _, aux = layer(x)
    assert aux.expert_counts.tolist() == [2, 1, 1, 0]
    torch.testing.assert_close(aux.loss, torch.tensor(7 / 6))


def test_moe_gradient_reaches_router_and_experts():
    torch.manual_seed(0)
    layer = MoE(16, 24, n_experts=4, top_k=2)
    y, aux = layer(randn(2, 9, 16))
    (y.pow(2).mean() + aux.loss).backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    used = aux.expert_counts > 0
    assert (layer.w_down.grad.abs().sum(dim=(1, 2)) > 0).tolist() == used.tolist()


def test_moe_runs_in_bf16():
    layer = MoE(16, 24, n_experts=4, top_k=2).to(torch.bfloat16)
    y, aux = layer(randn(2, 5, 16).bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()
    assert aux.loss.dtype == torch.float32


# -- the cost model ------------------------------------------------------------------------------

def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("dims", [
    {"d_model": 32, "n_heads": 4, "n_kv_heads": 2, "d_ff": 48, "moe_experts": 4, "moe_top_k": 2},
    {"d_model": 48, "n_heads": 6, "n_kv_heads": 3, "moe_experts": 3, "moe_top_k": 3},  # d_ff 128
    {"d_model": 64, "n_heads": 8, "n_kv_heads": 8, "d_ff": 96, "moe_experts": 2, "moe_top_k": 1},
])
def test_parameters_and_caches_equal_the_cost_model(dims):
    arch = ArchConfig.from_pattern("A L7+moe S", **dims)
    a_layer, l_layer, s_layer = arch.layers
    d, heads, kv, theta = arch.d_model, arch.n_heads, arch.n_kv_heads, arch.rope_theta
    global_attention = Attention(d, heads, kv, theta)
    local = LocalAttention(d, heads, kv, theta, window=7)
    block = SharedAttentionBlock(d, heads, kv, arch.d_ff, theta, arch.norm_eps)
    invocation = SharedBlockInvocation(block, d)
    assert count(global_attention) == count(local) == attention(arch, None, 1).params
    assert count(block) == shared_weights(arch)
    assert count(invocation) - count(block) == shared_invocation(arch, s_layer, 1).params
    assert count(SwiGLU(d, arch.d_ff)) == mlp(arch, a_layer, 1).params
    experts = MoE(d, arch.d_ff, arch.moe_experts, arch.moe_top_k)
    assert count(experts) == moe(arch, l_layer, 1).params
    for max_len in (1, 7, 50):
        for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
            for mixer, cache in ((global_attention, attention(arch, None, max_len).cache),
                                 (local, attention(arch, 7, max_len).cache),
                                 (invocation, shared_invocation(arch, s_layer, max_len).cache)):
                assert state_bytes(mixer.init_state(3, max_len, dtype=dtype)) == 3 * cache * size


# -- the MLP options and partial rotary embeddings ---------------------------------------------


@pytest.mark.parametrize("act, reference", [
    ("silu", lambda h: h * torch.sigmoid(h)),
    ("gelu", lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))),
    ("gelu_tanh", lambda h: 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi)
                                                       * (h + 0.044715 * h ** 3)))),
    ("relu", lambda h: h.clamp(min=0)),
    ("relu2", lambda h: h.clamp(min=0) ** 2),
])
@pytest.mark.parametrize("gated", [True, False])
def test_mlp_and_moe_expert_equal_the_written_out_formula(act, reference, gated):
    from trials.ffn.mlp import MLP

    torch.manual_seed(0)
    dense = MLP(16, 24, act=act, gated=gated, bias=True)
    x = randn(4, 16)
    up = x @ dense.up.weight.T + dense.up.bias
    hidden = reference(x @ dense.gate.weight.T + dense.gate.bias) * up if gated else reference(up)
    expected = hidden @ dense.down.weight.T + dense.down.bias
    torch.testing.assert_close(dense(x)[0], expected, atol=1e-5, rtol=1e-5)
    experts = MoE(16, 24, n_experts=2, top_k=1, act=act, gated=gated, bias=True)
    with torch.no_grad():
        for name in ("up", "down") + (("gate",) if gated else ()):
            getattr(experts, f"w_{name}")[1].copy_(getattr(dense, name).weight.T)
            getattr(experts, f"b_{name}")[1].copy_(getattr(dense, name).bias)
    torch.testing.assert_close(experts.expert(1, x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_partial_rotary_rotates_the_first_channels_of_each_head_only(fraction):
    layer = Attention(32, 2, 1, THETA, rope_fraction=fraction)  # head_dim 16
    rd = int(16 * fraction)
    assert layer.rotary_dim == rd
    x = randn(1, 5, 16).expand(1, 2, 5, 16).clone()  # (B, H, N, hd)
    # the layer rotates its projections' layout (B, N, H, hd)
    out = rotate_heads(x.transpose(1, 2), 3, THETA, layer.rotary_dim).transpose(1, 2)
    torch.testing.assert_close(out[..., rd:], x[..., rd:])
    if rd:
        torch.testing.assert_close(out[..., :rd], rotate(x[..., :rd], 3, THETA))


def test_router_without_renormalisation_keeps_the_softmax_weights():
    torch.manual_seed(0)
    layer = MoE(8, 12, n_experts=4, top_k=2, renormalize=False)
    x = randn(5, 8)
    probs, gates, experts = layer.route(x)
    torch.testing.assert_close(gates, probs.gather(1, experts))
    assert (gates.sum(-1) < 1).all()
    expected = sum(gates[:, k:k + 1] * torch.stack([layer.expert(int(e), x[t:t + 1])[0]
                                                     for t, e in enumerate(experts[:, k])])
                   for k in range(2))
    torch.testing.assert_close(layer(x)[0], expected, atol=1e-5, rtol=1e-5)


# -- the attention op inside a model ---------------------------------------------------------------

@pytest.mark.parametrize("pattern", ["A L", "(A M) S"])
def test_a_model_with_attention_is_the_same_on_both_kernel_paths(pattern):
    """Global (GQA) and sliding-window attention, and Zamba's shared block (head dim 2 d / H),
    through the native kernel and through SDPA: the logits and every parameter's gradient
    agree, and the trial-level record says which ran."""
    arch = ArchConfig.from_pattern(pattern, window=5, d_model=32, n_heads=4, n_kv_heads=2,
                                   d_state=4)
    tokens = torch.randint(0, 64, (2, 19), generator=torch.Generator().manual_seed(0))

    def logits_and_grads():
        model = build_model(arch, seed=0)
        with dispatch.recording() as ran:
            logits = model(tokens).logits
        loss = logits.float().square().mean()
        return logits, torch.autograd.grad(loss, list(model.parameters())), ran.kernels()

    logits, grads, ran = logits_and_grads()
    with dispatch.disabled():
        ref_logits, ref_grads, ref_ran = logits_and_grads()
    assert ran["attention"] == dispatch.NATIVE and ref_ran["attention"] == dispatch.PYTORCH
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    for i, (a, b) in enumerate(zip(grads, ref_grads)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=f"gradient {i}")
