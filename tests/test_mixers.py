"""Conformance suite over the whole mixer registry (DESIGN.md's mixer contract).

Every mixer: causal; `step` token by token equals the parallel `forward`; its parameters equal
the cost model's count; the tensors its decoding state keeps equal the cost model's cache; a
fresh state moved to a position (how decode latency is timed) is the state decoding reached
there, but for the cached values; every parameter receives a gradient.
"""

from __future__ import annotations

import pytest
import torch

from search_spaces import ArchConfig
from search_spaces.cost import MIXER_COSTS, shared_weights
from trials.builder import mixer_kwargs, shared_block_kwargs
from trials.mixers import MIXERS, SharedAttentionBlock
from trials.mixers.base import state_bytes
from trials.train.measure import at_position

# One small config per mixer; L's window is shorter than the sequence so decoding runs past it.
CASES = {
    "A": "A",
    "L": "L6",
    "M": "M",
    "M2": "M2",
    "R": "R",
    "H": "H",
    "S": "S",
}
DIMS = dict(d_model=32, n_heads=4, n_kv_heads=2, d_state=8, m2_d_state=8, m2_head_dim=16,
            hyena_filter_dim=16)
BATCH, LENGTH = 2, 21


def make(kind: str, seed: int = 0):
    arch = ArchConfig.from_pattern(CASES[kind], **DIMS)
    layer = arch.layers[0]
    torch.manual_seed(seed)
    if kind == "S":
        mixer = MIXERS["S"](SharedAttentionBlock(**shared_block_kwargs(arch)), d_model=arch.d_model)
    else:
        mixer = MIXERS[kind](**mixer_kwargs(arch, layer))
    return arch, layer, mixer


def call(mixer, x, emb):
    return mixer(x, emb) if getattr(mixer, "takes_embedding", False) else mixer(x)


def inputs(seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(BATCH, LENGTH, DIMS["d_model"], generator=generator)
    emb = torch.randn(BATCH, LENGTH, DIMS["d_model"], generator=generator)
    return x, emb


def test_registry_covers_every_mixer_of_the_pattern_language():
    from search_spaces.layers import MIXERS as PATTERN_MIXERS

    assert set(MIXERS) == set(PATTERN_MIXERS) == set(CASES)
    with pytest.raises(KeyError, match="unknown mixer 'Q'; valid: A, L"):
        MIXERS["Q"]


@pytest.mark.parametrize("kind", sorted(CASES))
def test_causal(kind):
    _, _, mixer = make(kind)
    x, emb = inputs()
    t = 9
    y = call(mixer, x, emb)
    x2, emb2 = x.clone(), emb.clone()
    x2[:, t] += torch.randn_like(x2[:, t])
    emb2[:, t] += 1.0
    y2 = call(mixer, x2, emb2)
    assert torch.equal(y[:, :t], y2[:, :t]) or torch.allclose(y[:, :t], y2[:, :t], atol=1e-6, rtol=0)
    assert not torch.allclose(y[:, t], y2[:, t])


@pytest.mark.parametrize("kind", sorted(CASES))
def test_step_decoding_equals_forward(kind):
    _, _, mixer = make(kind)
    x, emb = inputs()
    with torch.no_grad():
        parallel = call(mixer, x, emb)
        state = mixer.init_state(BATCH, LENGTH, device=x.device, dtype=x.dtype)
        outputs = []
        for t in range(LENGTH):
            if getattr(mixer, "takes_embedding", False):
                y_t, state = mixer.step(x[:, t], state, emb[:, t])
            else:
                y_t, state = mixer.step(x[:, t], state)
            outputs.append(y_t)
    sequential = torch.stack(outputs, dim=1)
    torch.testing.assert_close(sequential, parallel, atol=1e-4, rtol=1e-4)


def layout(state):
    """A state's structure with every tensor's values left out: keys, shapes, dtypes, ints."""
    if isinstance(state, torch.Tensor):
        return ("tensor", tuple(state.shape), state.dtype)
    if isinstance(state, dict):
        return {key: layout(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return [layout(part) for part in state]
    return state


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_state_moved_to_a_position_is_laid_out_as_one_decoded_there(kind):
    _, _, mixer = make(kind)
    x, emb = inputs()
    with torch.no_grad():
        for position in (3, LENGTH - 1):  # L6's ring has wrapped by the second
            state = mixer.init_state(BATCH, LENGTH, dtype=x.dtype)
            for t in range(position):
                if getattr(mixer, "takes_embedding", False):
                    _, state = mixer.step(x[:, t], state, emb[:, t])
                else:
                    _, state = mixer.step(x[:, t], state)
            moved = at_position(mixer.init_state(BATCH, LENGTH, dtype=x.dtype), position)
            assert layout(moved) == layout(state), (kind, position)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_parameters_equal_the_cost_model(kind):
    arch, layer, mixer = make(kind)
    built = sum(p.numel() for p in mixer.parameters())
    expected = MIXER_COSTS[kind](arch, layer, 1).params
    if kind == "S":
        expected += shared_weights(arch)  # one invocation plus the one shared block it uses
    assert built == expected


@pytest.mark.parametrize("kind", sorted(CASES))
@pytest.mark.parametrize("max_len", [1, 5, 64])
def test_decoding_state_equals_the_cost_models_cache(kind, max_len):
    arch, layer, mixer = make(kind)
    for dtype, size in ((torch.float32, 4), (torch.bfloat16, 2)):
        state = mixer.init_state(3, max_len, dtype=dtype)
        expected = MIXER_COSTS[kind](arch, layer, max_len).stored * size * 3
        assert state_bytes(state) == expected, (kind, dtype)


@pytest.mark.parametrize("kind", sorted(CASES))
def test_every_parameter_receives_a_gradient(kind):
    _, _, mixer = make(kind)
    x, emb = inputs()
    call(mixer, x, emb).pow(2).mean().backward()
    for name, parameter in mixer.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bf16_forward_runs_and_keeps_the_dtype(kind):
    _, _, mixer = make(kind)
    mixer = mixer.to(torch.bfloat16)
    x, emb = inputs()
    y = call(mixer, x.bfloat16(), emb.bfloat16())
    assert y.dtype == torch.bfloat16 and torch.isfinite(y.float()).all()


@pytest.mark.parametrize("kind", sorted(CASES))
def test_same_seed_same_weights(kind):
    first = make(kind, seed=5)[2].state_dict()
    second = make(kind, seed=5)[2].state_dict()
    third = make(kind, seed=6)[2].state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], third[k]) for k in first)
