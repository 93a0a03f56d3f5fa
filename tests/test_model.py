"""Whole models built from every preset: the cost model equals reality, decoding equals the
parallel forward, causality, gradients, determinism."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch

from search_spaces import ArchConfig, arch_names, load_arch
from search_spaces.cost import estimate
from trials.builder import build_model
from trials.ffn import MoE
from trials.mixers.base import state_bytes
from trials.model import Block

# Small sequences; griffin's window shrinks below the sequence so decoding passes it.
OVERRIDES = {"griffin": {"window": 8}}
LENGTH = 24


# Every option of the kinds at once, on every layer kind: activations, ungated MLPs, biases,
# partial and absent rotary embeddings, Jamba's inner Mamba norms.
VARIANTS = {
    "all_options": ArchConfig.from_pattern(
        "A L8 M M2+moe R H S+none", vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2,
        m2_head_dim=16, moe_experts=3, ffn_act="relu2", ffn_gated=False, ffn_bias=True,
        attn_qkv_bias=True, attn_out_bias=True, rope_fraction=0.5, mamba_inner_norms=True),
    "nope_geglu": ArchConfig.from_pattern(
        "(M A+moe S)*2", vocab_size=64, d_model=32, n_heads=4, moe_experts=3,
        ffn_act="gelu_tanh", rope_fraction=0.0, attn_out_bias=True),
    "zamba2_lora": ArchConfig.from_pattern(
        "(M2 S0 M2 S1)+none*2", vocab_size=64, d_model=32, n_heads=4, m2_head_dim=16,
        ffn_act="gelu", shared_lora_rank=4, shared_lora_attention=True),
}


def preset(name: str) -> ArchConfig:
    if name in VARIANTS:
        return VARIANTS[name]
    return load_arch(name, vocab_size=64, **OVERRIDES.get(name, {}))


def params_by_kind(model) -> dict[str, int]:
    """Parameters grouped as the cost model groups them, each tensor counted once."""
    seen: set[int] = set()
    totals: dict[str, int] = defaultdict(int)

    def add(kind: str, module) -> None:
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                totals[kind] += p.numel()

    add("embedding", model.embedding)
    for block, layer in zip(model.blocks, model.arch.layers):
        add("norm", block.mixer_norm)
        if block.ffn_norm is not None:
            add("norm", block.ffn_norm)
        add(layer.mixer, block.mixer)
        if block.ffn is not None:
            add(layer.ffn, block.ffn)
    add("norm", model.final_norm)
    if model.lm_head is not None:
        add("lm_head", model.lm_head)
    assert len(seen) == len(list(model.parameters()))
    return dict(totals)


# the *_full presets are published sizes, for `hnas cost`, not for building on a CPU
@pytest.fixture(params=[n for n in arch_names() if not n.endswith("_full")] + list(VARIANTS))
def built(request):
    arch = preset(request.param)
    model = build_model(arch, seed=0)
    return request.param, arch, model


def test_parameters_equal_the_cost_model_kind_by_kind(built):
    name, arch, model = built
    report = estimate(arch, context=LENGTH)
    expected = {kind: cost.params for kind, cost in report.breakdown.items() if cost.params}
    assert params_by_kind(model) == expected
    assert sum(p.numel() for p in model.parameters()) == report.params


def test_untied_head_is_counted(built):
    name, arch, _ = built
    untied = ArchConfig.from_dict({**arch.to_dict(), "tie_embeddings": False})
    model = build_model(untied)
    assert sum(p.numel() for p in model.parameters()) == estimate(untied).params


def test_decoding_state_equals_the_cost_models_cache(built):
    name, arch, model = built
    for max_len in (1, LENGTH, 300):
        state = model.init_state(batch=2, max_len=max_len, dtype=torch.float32)
        assert state_bytes(state) == 2 * estimate(arch, context=max_len, dtype="fp32").cache_bytes


def test_step_decoding_equals_forward(built):
    name, arch, model = built
    tokens = torch.randint(0, arch.vocab_size, (2, LENGTH), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        parallel = model(tokens).logits
        state = model.init_state(batch=2, max_len=LENGTH)
        steps = []
        for t in range(LENGTH):
            logits, state = model.step(tokens[:, t], state)
            steps.append(logits)
    torch.testing.assert_close(torch.stack(steps, dim=1), parallel, atol=2e-4, rtol=2e-4)


def test_residual_adds_fused_into_the_norms_equal_the_blocks_own_forward(built):
    """HybridLM leaves each residual add to the norm after it (`add_rms_norm`); the blocks'
    own forward, each add on its own, gives the same logits and gradients."""
    name, arch, model = built
    tokens = torch.randint(0, arch.vocab_size, (2, LENGTH), generator=torch.Generator().manual_seed(3))
    emb = model.embedding(tokens)
    h = emb
    for block in model.blocks:
        h, _ = block(h, emb)
    unfused = model._head(model.final_norm(h))
    fused = model(tokens).logits
    torch.testing.assert_close(fused, unfused, atol=1e-6, rtol=1e-6)
    noise = torch.randn(fused.shape, generator=torch.Generator().manual_seed(4))
    params = [p for p in model.parameters() if p.requires_grad]
    fused_grads = torch.autograd.grad((fused * noise).sum(), params, allow_unused=True)
    unfused_grads = torch.autograd.grad((unfused * noise).sum(), params, allow_unused=True)
    for fused_grad, unfused_grad in zip(fused_grads, unfused_grads):
        assert (fused_grad is None) == (unfused_grad is None)
        if fused_grad is not None:  # the gradient sums run in another order: relative to the max
            scale = max(1.0, unfused_grad.abs().max().item())
            assert (fused_grad - unfused_grad).abs().max().item() <= 1e-5 * scale


def test_causal(built):
    name, arch, model = built
    tokens = torch.randint(0, arch.vocab_size, (2, LENGTH), generator=torch.Generator().manual_seed(1))
    changed = tokens.clone()
    t = 11
    changed[:, t] = (changed[:, t] + 1) % arch.vocab_size
    with torch.no_grad():
        a, b = model(tokens).logits, model(changed).logits
    # Hyena's FFT long conv spreads rounding error over the whole sequence, the past included:
    # about 1e-6 here, and where inside that the leak falls moves with any change of rounding
    # upstream. A real leak of the future moves the logits by orders of magnitude more.
    torch.testing.assert_close(a[:, :t], b[:, :t], atol=1e-5, rtol=0)
    assert not torch.allclose(a[:, t], b[:, t])


def test_every_parameter_receives_a_gradient(built):
    name, arch, model = built
    tokens = torch.randint(0, arch.vocab_size, (2, LENGTH), generator=torch.Generator().manual_seed(2))
    out = model(tokens)
    loss = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), tokens.flatten()) + out.aux_loss
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_moe_active_parameters_are_what_one_token_uses():
    arch = preset("jamba")
    model = build_model(arch)
    report = estimate(arch)
    moe_blocks = [b for b in model.blocks if isinstance(b.ffn, MoE)]
    assert len(moe_blocks) == report.breakdown["moe"].count
    per_expert = sum(p.numel() for p in moe_blocks[0].ffn.parameters()) - arch.d_model * arch.moe_experts
    per_expert //= arch.moe_experts
    one_token = arch.d_model * arch.moe_experts + arch.moe_top_k * per_expert
    assert report.breakdown["moe"].active_params == len(moe_blocks) * one_token
    tokens = torch.randint(0, arch.vocab_size, (1, 16))
    out = model(tokens)
    for counts in out.expert_counts:  # every token goes to exactly top_k experts
        assert int(counts.sum()) == 16 * arch.moe_top_k
    assert out.aux_loss.item() > 0


def test_shared_blocks_are_one_module_per_id():
    arch = ArchConfig.from_pattern("(M S)*2 S1 S1", d_model=32, ffn="none")
    model = build_model(arch)
    shared = [b.mixer.block for b in model.blocks if isinstance(b, Block) and hasattr(b.mixer, "block")]
    assert len(shared) == 4
    assert shared[0] is shared[1] and shared[2] is shared[3] and shared[0] is not shared[2]
    assert sum(p.numel() for p in model.parameters()) == estimate(arch).params


def test_same_seed_same_model_and_global_rng_untouched():
    arch = preset("jamba")
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(arch, seed=3)
    after = torch.rand(1)
    b = build_model(arch, seed=3)
    c = build_model(arch, seed=4)
    assert torch.equal(before, after)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
