"""The analytic cost model against numbers worked out by hand from the documented formulas."""

from __future__ import annotations

import json

import pytest

from search_spaces import ArchConfig
from search_spaces.cost import DTYPE_BYTES, FFN_COSTS, MIXER_COSTS, estimate
from search_spaces.cost.attention import _mean_keys_windowed
from search_spaces.layers import FFNS, MIXERS

# A tiny model: d=16, V=32, H=4 (hd=4), KV=2, d_ff=24.
TINY = dict(d_model=16, vocab_size=32, n_heads=4, n_kv_heads=2, d_ff=24)


def kind(pattern: str, name: str, context: int = 10, dtype: str = "fp32", **dims):
    arch = ArchConfig.from_pattern(pattern, **{**TINY, **dims})
    return estimate(arch, context=context, dtype=dtype).breakdown[name]


# -- one check per layer kind ------------------------------------------------------------------

def test_attention():
    a = kind("A+none", "A", context=10)
    assert a.count == 1
    assert a.params == 16 * 16 + 16 * 8 + 16 * 8 + 16 * 16 == 768
    assert a.active_params == 768
    assert a.cache_bytes == 2 * 2 * 4 * 10 * 4  # K and V, KV=2, hd=4, 10 tokens, fp32
    # projections 2*768, attention 4*H*hd*(N+1)/2 = 4*4*4*5.5
    assert a.flops_per_token == pytest.approx(1536 + 352)


def test_local_attention_window_caps_cache():
    local = kind("L3+none", "L", context=10)
    assert local.params == 768
    assert local.cache_bytes == 2 * 2 * 4 * 3 * 4  # only the 3 most recent tokens
    # keys seen: 1, 2, 3, 3, ..., 3 -> mean 27/10
    assert local.flops_per_token == pytest.approx(1536 + 4 * 4 * 4 * 2.7)
    # below the window it is exactly global attention
    short_local, short_global = kind("L3+none", "L", context=2), kind("A+none", "A", context=2)
    assert short_local.cache_bytes == short_global.cache_bytes == 2 * 2 * 4 * 2 * 4
    assert short_local.flops_per_token == short_global.flops_per_token


@pytest.mark.parametrize("context", [1, 2, 7, 64, 65, 1000])
@pytest.mark.parametrize("window", [1, 8, 64])
def test_windowed_mean_closed_form_matches_loop(context, window):
    by_loop = sum(min(t, window) for t in range(1, context + 1)) / context
    assert _mean_keys_windowed(context, window) == pytest.approx(by_loop, rel=1e-15)


def test_mamba():
    m = kind("M+none", "M", context=10, d_state=4, d_conv=4, expand=2)  # di=32, dt_rank=1
    assert m.params == (16 * 64 + (32 * 4 + 32) + 32 * (1 + 8) + (1 * 32 + 32) + 32 * 4 + 32
                        + 32 * 16) == 2208
    assert m.cache_bytes == (32 * 3 + 32 * 4) * 4
    # in 2048, conv 256, x_proj 576, dt_proj 64, out 1024, scan 6*32*4 + 4*32
    assert m.flops_per_token == pytest.approx(2048 + 256 + 576 + 64 + 1024 + 768 + 128)


def test_mamba2():
    m2 = kind("M2+none", "M2", m2_d_state=8, m2_head_dim=8, m2_n_groups=1, d_conv=4, expand=2)
    # di=32, nh=4, conv channels 32 + 2*8 = 48
    assert m2.params == 16 * 84 + (48 * 4 + 48) + 3 * 4 + 32 + 32 * 16 == 2140
    assert m2.cache_bytes == (48 * 3 + 4 * 8 * 8) * 4
    # in 2*16*84, conv 2*48*4, out 2*32*16, scan 5*32*8 + 4*32 + 2*4
    assert m2.flops_per_token == pytest.approx(2688 + 384 + 1024 + 1280 + 128 + 8)


def test_rglru_block():
    r = kind("R+none", "R", d_conv=4)  # w=16, 4 gate blocks of 4x4
    assert r.params == 2 * (256 + 16) + (64 + 16) + 2 * (4 * 16 + 16) + 16 + (256 + 16) == 1072
    assert r.cache_bytes == (16 * 3 + 16) * 4
    # linear_x, linear_y 2*2*16*16, conv 2*16*4, gates 2*2*16*4, out 2*16*16, elementwise 8*16
    assert r.flops_per_token == pytest.approx(1024 + 128 + 256 + 512 + 128)


def test_hyena():
    h = kind("H+none", "H", context=8, hyena_order=2, hyena_pos_dim=5, hyena_filter_dim=8,
             hyena_short_conv=3)
    # in_proj 16->48, short conv 48x3, filter MLP 5->8->8->16, filter bias 16, out_proj 16->16
    assert h.params == (16 * 48 + 48) + (48 * 3 + 48) + (40 + 8) + 8 + (64 + 8) + 8 + 128 + 16 \
        + (256 + 16) == 1560
    assert h.cache_bytes == (48 * 2 + 16 * 8) * 4  # short-conv state + 8 past inputs
    # FFT length 16: real FFT 2.5*16*4 = 160; per channel (3*160 + 6*9)/8 = 66.75, +2 for the
    # bias term, 16 channels; filter MLP 80+8+128+8+256+16; gates 2*16
    expected = 1536 + 288 + 512 + 496 + 16 * (66.75 + 2) + 32
    assert h.flops_per_token == pytest.approx(expected)


def test_mlp_and_moe_active_params():
    mlp = kind("A", "mlp")
    assert mlp.params == mlp.active_params == 3 * 16 * 24
    moe = kind("A+moe", "moe", moe_experts=4, moe_top_k=2)
    assert moe.params == 16 * 4 + 4 * 1152
    assert moe.active_params == 16 * 4 + 2 * 1152
    assert moe.cache_bytes == 0


def test_shared_block_weights_once_projection_and_cache_per_invocation():
    # shared block, hs = 2*16/4 = 8: norm 32, q 32x32, k, v 32x16, o 32x16, norm 16, MLP 3*16*24
    shared = 32 + 1024 + 512 + 512 + 512 + 16 + 1152
    same = kind("(M+none S+none)*2", "S", context=10)
    assert same.count == 2
    assert same.params == shared + 2 * 16 * 16
    assert same.cache_bytes == 2 * (2 * 2 * 8 * 10) * 4
    two_ids = kind("M+none S0+none M+none S1+none", "S", context=10)
    assert two_ids.params == 2 * shared + 2 * 16 * 16
    assert two_ids.cache_bytes == same.cache_bytes
    assert two_ids.flops_per_token == same.flops_per_token


def test_every_kind_has_a_cost_function():
    assert set(MIXER_COSTS) == set(MIXERS)
    assert set(FFN_COSTS) == set(FFNS) - {"none"}


# -- whole models ------------------------------------------------------------------------------

def test_whole_tiny_model():
    arch = ArchConfig.from_pattern("A+none", **TINY)
    report = estimate(arch, context=10, dtype="fp32")
    assert list(report.breakdown) == ["embedding", "A", "norm"]
    assert report.breakdown["norm"].count == 2  # pre-mixer + final
    assert report.params == 32 * 16 + 768 + 2 * 16
    # the tied LM head's 2*d*V FLOPs count under "embedding"
    assert report.flops_per_token == pytest.approx(1888 + 2 * 16 * 32)


def test_norm_count():
    arch = ArchConfig.from_pattern("A M+none R+moe", **TINY)
    norm = estimate(arch, context=4).breakdown["norm"]
    assert norm.count == 3 + 2 + 1
    assert norm.params == 6 * 16


def test_hybrid_cache_is_an_eighth_of_the_transformers():
    transformer = estimate(ArchConfig.from_pattern("A*24", d_model=2048), 8192, "bf16")
    hybrid = estimate(ArchConfig.from_pattern("(M*7 A)*3", d_model=2048), 8192, "bf16")
    # 24 layers x K,V x 4 heads x head dim 512 x 8192 tokens x 2 bytes
    assert transformer.cache_bytes == 24 * 2 * 4 * 512 * 8192 * 2
    assert hybrid.breakdown["A"].cache_bytes * 8 == transformer.breakdown["A"].cache_bytes
    mamba_state = (4096 * 3 + 4096 * 16) * 2  # d_inner 4096, conv 4-1, d_state 16, bf16
    assert hybrid.cache_bytes == transformer.cache_bytes // 8 + 21 * mamba_state


def test_tied_vs_untied_head():
    tied = estimate(ArchConfig.from_pattern("A", **TINY), context=16)
    untied = estimate(ArchConfig.from_pattern("A", tie_embeddings=False, **TINY), context=16)
    assert "lm_head" not in tied.breakdown
    assert untied.breakdown["lm_head"].params == 32 * 16
    assert untied.params == tied.params + 32 * 16
    assert untied.flops_per_token == pytest.approx(tied.flops_per_token)


def test_totals_are_sums_of_the_breakdown():
    arch = ArchConfig.from_pattern("(M S L8+moe H+none M2 R)*2 A", tie_embeddings=False, **TINY)
    report = estimate(arch, context=100, dtype="bf16")
    parts = report.breakdown.values()
    assert report.params == sum(p.params for p in parts)
    assert report.active_params == sum(p.active_params for p in parts)
    assert report.cache_bytes == sum(p.cache_bytes for p in parts)
    assert report.flops_per_token == pytest.approx(sum(p.flops_per_token for p in parts))
    assert report.active_params < report.params  # the MoE's idle experts
    assert {"A", "L", "M", "M2", "R", "H", "S", "mlp", "moe", "embedding", "lm_head",
            "norm"} == set(report.breakdown)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["breakdown"]["S"]["count"] == 2 and data["params"] == report.params
    assert data["context"] == 100 and data["dtype"] == "bf16"


def test_flops_grow_with_context_for_attention_not_for_mamba():
    arch = ArchConfig.from_pattern("A M", **TINY)
    short, long = estimate(arch, context=1024), estimate(arch, context=4096)
    assert long.breakdown["A"].flops_per_token > short.breakdown["A"].flops_per_token
    assert long.breakdown["M"].flops_per_token == short.breakdown["M"].flops_per_token
    assert long.breakdown["M"].cache_bytes == short.breakdown["M"].cache_bytes


# -- dtypes and input checks -------------------------------------------------------------------

def test_dtypes_scale_the_cache():
    arch = ArchConfig.from_pattern("A M", **TINY)
    by_name = {name: estimate(arch, 64, name) for name in DTYPE_BYTES}
    assert by_name["fp32"].cache_bytes == 2 * by_name["bf16"].cache_bytes \
        == 4 * by_name["fp8"].cache_bytes
    assert by_name["bfloat16"].cache_bytes == by_name["fp16"].cache_bytes \
        == by_name["bf16"].cache_bytes
    assert by_name["bfloat16"].dtype == "bf16" and by_name["float32"].dtype == "fp32"


def test_unknown_dtype_names_the_valid_ones():
    arch = ArchConfig.from_pattern("A", **TINY)
    with pytest.raises(ValueError, match="int8.*bf16"):
        estimate(arch, 64, "int8")


@pytest.mark.parametrize("context", [0, -5, 1.5, True, "8192", None])
def test_bad_context(context):
    arch = ArchConfig.from_pattern("A", **TINY)
    with pytest.raises(ValueError, match="context"):
        estimate(arch, context)
