"""Hugging Face export: every fitting architecture builds a tiny transformers model whose layers,
read back module by module, are ours; every misfit is refused with the feature that stops it.

The read-back goes through the built model's modules, not the config we wrote: the HF configs
turn unknown or misplaced entries into other layer kinds without a word.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from nas.export import (  # noqa: E402
    HF_FAMILIES,
    HFExportError,
    hf,
    hf_config_object,
    hf_families_for,
    to_hf_config,
)
from search_spaces import ArchConfig, from_hf, load_arch  # noqa: E402
from search_spaces.cost import estimate  # noqa: E402

TINY = {"d_model": 32, "n_heads": 4, "n_kv_heads": 2, "vocab_size": 96, "m2_head_dim": 16,
        "m2_d_state": 16, "d_state": 8, "moe_experts": 4, "moe_top_k": 2}

# What the families' modules hard-code, as our options.
JAMBA_OPTIONS = {"rope_fraction": 0.0, "mamba_inner_norms": True, "moe_renormalize": False}
NEMOTRON_OPTIONS = {"rope_fraction": 0.0, "ffn_gated": False, "ffn_act": "relu2",
                    "tie_embeddings": False}
NEMOTRON_MIX = ArchConfig.from_pattern("M2+none A M2 M2 A+none M2", **TINY, **NEMOTRON_OPTIONS)
ZAMBA2_MIX = ArchConfig.from_pattern("(M2*2 S0 M2 S1 M2)+none*2", ffn_act="gelu", **TINY)
JAMBA_ALL_MOE = ArchConfig.from_pattern("(M A M M)+moe*2", **TINY, **JAMBA_OPTIONS)


def _model(config):
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


# -- reading a built model back as our layers -------------------------------------------------


def _read_jamba(model):
    layers = []
    for block in model.model.layers:
        mixer = {"JambaAttention": "A", "JambaMambaMixer": "M"}[
            type(getattr(block, "self_attn", None) or block.mamba).__name__]
        ffn = {"JambaMLP": "mlp", "JambaSparseMoeBlock": "moe"}[type(block.feed_forward).__name__]
        layers.append(f"{mixer}+{ffn}")
    return layers


def _read_nemotron_h(model):
    layers = []
    for block in model.model.layers:
        kind = type(block.mixer).__name__
        if kind in ("NemotronHMamba2Mixer", "NemotronHAttention"):
            layers.append([{"NemotronHMamba2Mixer": "M2", "NemotronHAttention": "A"}[kind], "none"])
        else:  # an FFN entry belongs to the mixer entry before it
            assert layers and layers[-1][1] == "none", kind
            layers[-1][1] = {"NemotronHMLP": "mlp", "NemotronHMoE": "moe"}[kind]
    return [f"{mixer}+{ffn}" for mixer, ffn in layers]


def _read_zamba2(model):
    layers = []
    for block in model.model.layers:
        if type(block).__name__ == "Zamba2HybridLayer":
            assert type(block.shared_transformer.self_attn).__name__ == "Zamba2Attention"
            layers.append(f"S{block.shared_transformer.block_id}+none")
            block = block.mamba_decoder
        assert type(block.mamba).__name__ == "Zamba2MambaMixer"
        layers.append("M2+none")
    return layers


def _read_recurrent_gemma(model):
    layers = []
    for block in model.model.layers:
        temporal = block.temporal_block
        kind = type(temporal).__name__
        mixer = {"RecurrentGemmaRecurrentBlock": "R",
                 "RecurrentGemmaAttention": f"L{getattr(temporal, 'sliding_window', None)}"}[kind]
        assert type(block.mlp_block).__name__ == "RecurrentGemmaMlp"
        layers.append(f"{mixer}+mlp")
    return layers


READ = {"jamba": _read_jamba, "nemotron_h": _read_nemotron_h, "zamba2": _read_zamba2,
        "recurrent_gemma": _read_recurrent_gemma}


def _ours(arch):
    return [f"{layer.mixer}{'' if layer.arg is None else layer.arg}+{layer.ffn}"
            for layer in arch.layers]


def _embedding(model):
    return model.get_input_embeddings().weight


# -- widths, read back from the modules, per family --------------------------------------------


def _widths_jamba(model, arch):
    hd = arch.d_model // arch.n_heads
    for block in model.model.layers:
        if hasattr(block, "self_attn"):
            assert block.self_attn.q_proj.out_features == arch.n_heads * hd
            assert block.self_attn.k_proj.out_features == arch.n_kv_heads * hd
        else:
            mamba = block.mamba
            assert tuple(mamba.A_log.shape) == (arch.expand * arch.d_model, arch.d_state)
            assert mamba.conv1d.kernel_size == (arch.d_conv,)
            assert mamba.x_proj.out_features == arch.dt_rank + 2 * arch.d_state
        ffn = block.feed_forward
        if hasattr(ffn, "experts"):
            assert tuple(ffn.experts.gate_up_proj.shape) == (arch.moe_experts, 2 * arch.d_ff,
                                                             arch.d_model)
            assert ffn.router.top_k == arch.moe_top_k
        else:
            assert ffn.gate_proj.out_features == arch.d_ff


def _widths_nemotron_h(model, arch):
    hd = arch.d_model // arch.n_heads
    for block in model.model.layers:
        mixer, kind = block.mixer, type(block.mixer).__name__
        if kind == "NemotronHMamba2Mixer":
            assert mixer.head_dim == arch.m2_head_dim
            assert mixer.num_heads == arch.expand * arch.d_model // arch.m2_head_dim
            assert (mixer.n_groups, mixer.ssm_state_size) == (arch.m2_n_groups, arch.m2_d_state)
            assert mixer.conv1d.kernel_size == (arch.d_conv,)
        elif kind == "NemotronHAttention":
            assert mixer.q_proj.out_features == arch.n_heads * hd
            assert mixer.k_proj.out_features == arch.n_kv_heads * hd
        elif kind == "NemotronHMoE":
            assert tuple(mixer.experts.up_proj.shape) == (arch.moe_experts, arch.d_ff, arch.d_model)
            assert mixer.gate.top_k == arch.moe_top_k
        else:
            assert mixer.up_proj.out_features == arch.d_ff


def _widths_zamba2(model, arch):
    hd = 2 * arch.d_model // arch.n_heads  # the shared block attends over concat(h, emb)
    shared = {}
    for block in model.model.layers:
        if type(block).__name__ == "Zamba2HybridLayer":
            attention = block.shared_transformer.self_attn
            assert attention.q_proj.in_features == 2 * arch.d_model
            assert attention.q_proj.out_features == arch.n_heads * hd
            assert attention.k_proj.out_features == arch.n_kv_heads * hd
            assert block.shared_transformer.feed_forward.intermediate_size == arch.d_ff
            shared.setdefault(block.shared_transformer.block_id, set()).add(
                attention.q_proj.weight.data_ptr())
            block = block.mamba_decoder
        mamba = block.mamba
        assert mamba.num_heads == arch.expand * arch.d_model // arch.m2_head_dim
        assert (mamba.n_groups, mamba.ssm_state_size) == (arch.m2_n_groups, arch.m2_d_state)
        assert mamba.conv1d.kernel_size == (arch.d_conv,)
    # One set of weights per shared block id, distinct between ids.
    assert all(len(pointers) == 1 for pointers in shared.values()), shared
    assert len({next(iter(p)) for p in shared.values()}) == len(shared)


def _widths_recurrent_gemma(model, arch):
    hd = arch.d_model // arch.n_heads
    for block in model.model.layers:
        temporal = block.temporal_block
        if type(temporal).__name__ == "RecurrentGemmaRecurrentBlock":
            assert temporal.linear_x.out_features == arch.lru_width
            assert temporal.conv_1d.kernel_size == (arch.d_conv,)
            assert temporal.rg_lru.num_attention_heads == arch.n_heads
        else:
            assert temporal.q_proj.out_features == arch.n_heads * hd
            assert temporal.k_proj.out_features == arch.n_kv_heads * hd
        assert block.mlp_block.gate_proj.out_features == arch.d_ff


WIDTHS = {"jamba": _widths_jamba, "nemotron_h": _widths_nemotron_h, "zamba2": _widths_zamba2,
          "recurrent_gemma": _widths_recurrent_gemma}

FITS = [
    ("jamba", "jamba"),
    (JAMBA_ALL_MOE, "jamba"),
    (ArchConfig.from_pattern("A*3", **TINY, **JAMBA_OPTIONS), "jamba"),
    (NEMOTRON_MIX, "nemotron_h"),
    (ArchConfig.from_pattern("M2+none*4", **TINY, **NEMOTRON_OPTIONS), "nemotron_h"),
    (ZAMBA2_MIX, "zamba2"),
    ("mamba2", "zamba2"),
    ("griffin", "recurrent_gemma"),
    ("hawk", "recurrent_gemma"),
    ("mamba", "mamba"),
    ("mamba2", "mamba2"),
    ("transformer", "llama"),
    (ArchConfig.from_pattern("A*3", attn_qkv_bias=True, attn_out_bias=True, ffn_bias=True,
                             ffn_act="gelu", **TINY), "llama"),
    ("transformer", "mistral"),
    (ArchConfig.from_pattern("L16*3", **TINY), "mistral"),
    (ArchConfig.from_pattern("A+moe*2", **TINY), "mixtral"),
]


# Zamba2's empty (rank 0) adapters make torch warn that initialising them does nothing.
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("arch, family", FITS, ids=lambda x: x if isinstance(x, str) else x.pattern)
def test_built_model_reads_back_as_our_layers_and_widths(arch, family):
    arch = load_arch(arch) if isinstance(arch, str) else arch
    config = hf_config_object(arch, family)
    assert config.model_type == family
    model = _model(config)
    assert type(model).__name__ == to_hf_config(arch, family)["architectures"][0]
    if family in READ:
        assert READ[family](model) == _ours(arch)
        WIDTHS[family](model, arch)
    # the model the search optimised is the model exported: parameter for parameter
    assert sum(p.numel() for p in model.parameters()) == estimate(arch).params
    assert tuple(_embedding(model).shape) == (arch.vocab_size, arch.d_model)
    assert model.config.vocab_size == arch.vocab_size
    tied = model.lm_head.weight.data_ptr() == _embedding(model).data_ptr()
    assert tied == arch.tie_embeddings
    assert config.tie_word_embeddings == arch.tie_embeddings
    with torch.no_grad():  # use_cache=False: 5.24 fails a cached forward with no attention layer
        logits = model(torch.randint(0, arch.vocab_size, (1, 6)), use_cache=False).logits
    assert logits.shape == (1, 6, arch.vocab_size) and torch.isfinite(logits).all()


def test_jamba_periods_and_offsets():
    config = to_hf_config(load_arch("jamba"), "jamba")
    assert (config["attn_layer_period"], config["attn_layer_offset"]) == (8, 4)
    assert (config["expert_layer_period"], config["expert_layer_offset"]) == (2, 1)
    assert (config["num_experts"], config["num_experts_per_tok"]) == (4, 2)
    config = to_hf_config(JAMBA_ALL_MOE, "jamba")
    assert (config["attn_layer_period"], config["attn_layer_offset"]) == (4, 1)
    assert (config["expert_layer_period"], config["expert_layer_offset"]) == (1, 0)
    no_moe = to_hf_config(ArchConfig.from_pattern("A*6", **JAMBA_OPTIONS), "jamba")
    assert no_moe["num_experts"] == 1 and no_moe["attn_layer_period"] == 1
    # No attention at all: a period longer than the stack, so no layer reaches the offset.
    mamba_only = hf_config_object(ArchConfig.from_pattern("M M M", **TINY, **JAMBA_OPTIONS),
                                  "jamba")
    assert (mamba_only.attn_layer_period, mamba_only.attn_layer_offset) == (4, 3)
    assert mamba_only.layers_block_type == ["mamba"] * 3


def test_nemotron_pattern_splits_each_layer_into_mixer_and_ffn():
    config = to_hf_config(NEMOTRON_MIX, "nemotron_h")
    assert config["hybrid_override_pattern"] == "M*-M-M-*M-"
    assert config["num_hidden_layers"] == 10
    assert (config["mlp_hidden_act"], config["mlp_bias"]) == ("relu2", False)
    built = hf_config_object(NEMOTRON_MIX, "nemotron_h")
    assert built.hybrid_override_pattern == "M*-M-M-*M-"
    assert (built.num_attention_heads, built.num_key_value_heads, built.head_dim) == (4, 2, 8)


def test_zamba2_hybrid_layers_and_round_robin_blocks():
    config = hf_config_object(ZAMBA2_MIX, "zamba2")
    assert config.layers_block_type == ["linear_attention", "linear_attention", "hybrid",
                                        "hybrid"] * 2
    assert config.num_mem_blocks == 2 and config.hybrid_layer_ids == [2, 3, 6, 7]
    assert config.rope_parameters["rope_theta"] == ZAMBA2_MIX.rope_theta
    # Block ids are labels: S1 first, then S0, is the same round robin.
    swapped = ArchConfig.from_pattern("S1 M2 S0 M2 S1 M2", ffn="none", **TINY)
    assert to_hf_config(swapped, "zamba2")["num_mem_blocks"] == 2


def test_recurrent_gemma_cycle_window_and_rope():
    config = hf_config_object(load_arch("griffin"), "recurrent_gemma")
    assert config.block_types == ["recurrent", "recurrent", "attention"]
    assert config.num_hidden_layers == 6 and config.attention_window_size == 128
    assert config.rope_parameters["partial_rotary_factor"] == 0.5  # griffin's rope_fraction
    assert config.num_key_value_heads == 1
    # RecurrentGemma repeats block_types only 100 times: a longer stack gets the whole list.
    deep = ArchConfig.from_pattern("R*101", d_model=8, n_heads=2, ffn_bias=True)
    assert len(to_hf_config(deep, "recurrent_gemma")["block_types"]) == 101
    assert len(hf_config_object(deep, "recurrent_gemma").layers_block_type) == 101


REFUSALS = [
    ("M L64 M M", {}, "jamba", "layer 1 (L64): local attention has no equivalent in JambaConfig"),
    ("M A A M M M", {}, "jamba", "attention at layers 1, 2 is not periodic"),
    ("A M A M M A", {}, "jamba", "attention at layers 0, 2, 5 is not periodic"),
    ("M M+moe M+moe M", {}, "jamba", "MoE at layers 1, 2 is not periodic"),
    ("M A M M+none", {}, "jamba", "layer 3 (M+none): a layer without an FFN has no equivalent "
                                  "in JambaConfig"),
    ("M2 A", {}, "jamba", "layer 0 (M2): Mamba-2 has no equivalent in JambaConfig (its Mamba "
                          "layers are Mamba-1)"),
    ("M+moe", {"moe_experts": 1, "moe_top_k": 1}, "jamba", "MoE with moe_experts=1 has no "
                                                           "equivalent in JambaConfig"),
    ("M2 M A", {}, "nemotron_h", "layer 1 (M): Mamba has no equivalent in NemotronHConfig (its M "
                                 "layers are Mamba-2)"),
    ("M2 L32", {}, "nemotron_h", "layer 1 (L32): local attention has no equivalent in "
                                 "NemotronHConfig"),
    ("S M2", {}, "nemotron_h", "layer 0 (S0): shared attention block has no equivalent"),
    ("R A", {}, "nemotron_h", "layer 0 (R): RG-LRU has no equivalent in NemotronHConfig"),
    ("(M2*6 S)*2", {"ffn": "none"}, "zamba2", "layer 13 (S0): a shared block followed by the end "
                                              "has no equivalent in Zamba2Config"),
    ("S S M2", {"ffn": "none"}, "zamba2", "layer 0 (S0): a shared block followed by layer 1 "
                                          "(S0+none)"),
    ("S M2+mlp", {"ffn": "none"}, "zamba2", "followed by layer 1 (M2+mlp)"),
    ("M2 S M2", {}, "zamba2", "layer 0 (M2+mlp): an FFN after a Mamba-2 has no equivalent in "
                              "Zamba2Config"),
    ("S0 M2 S0 M2 S1 M2", {"ffn": "none"}, "zamba2", "shared blocks S0 S0 S1 are not used "
                                                     "round-robin"),
    ("M2 A", {"ffn": "none"}, "zamba2", "layer 1 (A): full attention has no equivalent in "
                                        "Zamba2Config"),
    ("(M*6 S)*2", {"ffn": "none"}, "zamba2", "layer 0 (M): Mamba has no equivalent in "
                                             "Zamba2Config (its Mamba layers are Mamba-2)"),
    ("R L64 R L128", {}, "recurrent_gemma", "local attention windows 64, 128 differ: "
                                            "RecurrentGemmaConfig has one attention_window_size"),
    ("R R A", {}, "recurrent_gemma", "layer 2 (A): full attention has no equivalent in "
                                     "RecurrentGemmaConfig (its attention is always local)"),
    ("R R+none L", {}, "recurrent_gemma", "layer 1 (R+none): a layer without an MLP has no "
                                          "equivalent in RecurrentGemmaConfig"),
    ("R+moe", {}, "recurrent_gemma", "layer 0 (R+moe): an MoE has no equivalent"),
    ("R M2", {}, "recurrent_gemma", "layer 1 (M2): Mamba-2 has no equivalent in "
                                    "RecurrentGemmaConfig"),
    ("M2 A+moe", NEMOTRON_OPTIONS, "nemotron_h", "layer 1 (A+moe): an MoE has no equivalent in "
                                                 "NemotronHConfig (its MoE adds an always-on "
                                                 "shared expert"),
    ("M2+none A", {}, "nemotron_h", "NemotronHConfig: ffn_gated=True: NemotronHMLP is not gated "
                                    "(up, act, down) (ffn_gated=False); rope_fraction=1.0: "
                                    "NemotronHAttention has no rotary embedding "
                                    "(rope_fraction=0.0); tie_embeddings=True"),
    ("M A", {"mamba_inner_norms": True}, "jamba", "JambaConfig: rope_fraction=1.0: "
                                                  "JambaAttention has no rotary embedding"),
    ("M A", {"rope_fraction": 0.0}, "jamba", "mamba_inner_norms=False: JambaMambaMixer norms "
                                             "dt, B and C (mamba_inner_norms=True)"),
    ("R", {}, "recurrent_gemma", "RecurrentGemmaConfig: ffn_bias=False: RecurrentGemmaMlp's "
                                 "linears have biases (ffn_bias=True)"),
    ("S M2", {"ffn": "none", "rope_fraction": 0.5}, "zamba2", "rope_fraction=0.5: Zamba2's "
                                                              "use_mem_rope rotates whole heads"),
    ("S M2", {"ffn": "none", "tie_embeddings": False}, "zamba2",
     "tie_embeddings=False: Zamba2ForCausalLM shares its blocks' weights only when it ties the "
     "embeddings"),
    ("A", {"attn_qkv_bias": True}, "llama", "attn_qkv_bias=True and attn_out_bias=False differ: "
                                            "LlamaConfig's attention_bias sets them all"),
    ("A", {"ffn_gated": False}, "llama", "ffn_gated=False: LlamaConfig's MLPs are gated"),
    ("A", {"ffn_bias": True}, "mistral", "ffn_bias=True: MistralConfig has no ffn bias"),
    ("L8 L16", {}, "mistral", "layers L16, L8 differ: MistralConfig has one sliding_window"),
    ("A M", {}, "mixtral", "layer 0 (A+mlp): MixtralConfig has an MoE on every layer"),
    ("M M+mlp", {"ffn": "none"}, "mamba", "layer 1 (M+mlp): MambaConfig has no FFN on every "
                                          "layer"),
    ("M M2", {"ffn": "none"}, "mamba", "layer 1 (M2): Mamba-2 has no equivalent in MambaConfig"),
    ("M2 A", {"ffn": "none"}, "mamba2", "layer 1 (A): full attention has no equivalent in "
                                        "Mamba2Config"),
]


@pytest.mark.parametrize("pattern, dims, family, message", REFUSALS)
def test_refusals_name_the_feature(pattern, dims, family, message):
    arch = ArchConfig.from_pattern(pattern, **dims)
    with pytest.raises(HFExportError) as caught:
        to_hf_config(arch, family)
    assert message in str(caught.value)
    assert hf_families_for(arch)[family] == str(caught.value)


@pytest.mark.parametrize("family", HF_FAMILIES)
def test_hyena_fits_no_family(family):
    cls = hf._SPECS[family].config_class
    with pytest.raises(HFExportError, match=rf"layer 0 \(H\): Hyena has no equivalent in {cls}"):
        to_hf_config(ArchConfig.from_pattern("H"), family)


def test_which_presets_fit_which_family():
    fits = {name: sorted(f for f, why in hf_families_for(load_arch(name)).items() if why is None)
            for name in ("jamba", "zamba", "griffin", "hawk", "stripedhyena", "transformer",
                         "mamba", "mamba2")}
    assert fits == {"jamba": ["jamba"], "zamba": [], "griffin": ["recurrent_gemma"],
                    "hawk": ["recurrent_gemma"], "stripedhyena": [],
                    "transformer": ["llama", "mistral"], "mamba": ["mamba"],
                    "mamba2": ["mamba2", "zamba2"]}


def test_config_dict_is_json_and_unknown_family_is_named():
    for arch, family in ((load_arch("jamba"), "jamba"), (NEMOTRON_MIX, "nemotron_h"),
                         (ZAMBA2_MIX, "zamba2"), (load_arch("griffin"), "recurrent_gemma")):
        config = json.loads(json.dumps(to_hf_config(arch, family)))
        assert config["model_type"] == family and config["pad_token_id"] is None
    with pytest.raises(HFExportError, match="unknown Hugging Face family 'gpt2'; valid: jamba"):
        to_hf_config(load_arch("jamba"), "gpt2")


def test_read_back_catches_a_silent_conversion(monkeypatch):
    """RecurrentGemma builds attention for any entry that is not "recurrent": a typo must not
    export quietly as another layer kind."""
    spec = hf._SPECS["recurrent_gemma"]

    def misspelt(arch):
        config = spec.build(arch)
        config["block_types"] = ["recurent" if kind == "recurrent" else kind
                                 for kind in config["block_types"]]
        return config

    monkeypatch.setitem(hf._SPECS, "recurrent_gemma", dataclasses.replace(spec, build=misspelt))
    with pytest.raises(HFExportError, match="reads this RecurrentGemmaConfig as layers"):
        hf_config_object(load_arch("hawk"), "recurrent_gemma")


def test_missing_transformers_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"pip install 'hybrid-nas\[hf\]'"):
        hf_config_object(load_arch("jamba"), "jamba")


def test_export_needs_neither_torch_nor_transformers():
    code = ("import sys\n"
            "sys.modules['torch'] = None\n"
            "sys.modules['transformers'] = None\n"
            "from search_spaces import load_arch\n"
            "from nas.export import to_hf_config, hf_families_for\n"
            "print(to_hf_config(load_arch('griffin'), 'recurrent_gemma')['block_types'])\n"
            "print(hf_families_for(load_arch('jamba'))['jamba'])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["['recurrent', 'recurrent', 'attention']", "None"]


@pytest.mark.parametrize("arch, family", FITS, ids=lambda x: x if isinstance(x, str) else x.pattern)
def test_import_of_the_export_is_the_same_architecture(arch, family):
    arch = load_arch(arch) if isinstance(arch, str) else arch
    again = from_hf(to_hf_config(arch, family))
    assert again.layers == arch.layers and again.fingerprint() == arch.fingerprint()


# -- every accepted export, over sampled architectures -------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_ACTS = st.sampled_from(["silu", "gelu", "gelu_tanh", "relu", "relu2"])


@st.composite
def _family_arch(draw):
    """A family and an architecture drawn from the shapes it accepts, widths and options free."""
    family = draw(st.sampled_from(HF_FAMILIES))
    heads = draw(st.sampled_from([2, 4]))
    dims = {"d_model": 8 * heads * draw(st.integers(1, 2)), "n_heads": heads,
            "vocab_size": draw(st.integers(16, 80)), "d_ff": draw(st.integers(4, 40)),
            "ffn_act": draw(_ACTS), "tie_embeddings": draw(st.booleans()),
            "moe_experts": draw(st.integers(2, 4)), "moe_top_k": 1,
            "d_state": draw(st.integers(2, 8)), "dt_rank": draw(st.integers(1, 4)),
            "d_conv": draw(st.integers(2, 4)), "m2_head_dim": 8, "m2_d_state": draw(st.integers(2, 8)),
            "m2_n_groups": draw(st.sampled_from([1, 2])),
            "n_kv_heads": draw(st.sampled_from([1, heads]))}
    n = draw(st.integers(1, 6))
    if family in ("llama", "mistral", "mixtral"):
        mixer = draw(st.sampled_from(["A", "L5"] if family != "llama" else ["A"]))
        ffn = "moe" if family == "mixtral" else "mlp"
        bias = family == "llama" and draw(st.booleans())
        dims |= {"attn_qkv_bias": bias, "attn_out_bias": bias,
                 "ffn_bias": family == "llama" and draw(st.booleans())}
        pattern = f"{mixer}+{ffn}*{n}"
    elif family in ("mamba", "mamba2"):
        pattern = f"{'M' if family == 'mamba' else 'M2'}+none*{n}"
        dims |= {"expand": draw(st.integers(1, 2))}
    elif family == "jamba":
        period = draw(st.integers(1, 4))
        layers = [("A" if i % period == period - 1 else "M") + ("+moe" if i % 2 else "+mlp")
                  for i in range(max(n, period))]
        pattern = " ".join(layers)
        dims |= {"rope_fraction": 0.0, "mamba_inner_norms": True, "moe_renormalize": False}
    elif family == "nemotron_h":
        layers = draw(st.lists(st.sampled_from(["M2+none", "M2+mlp", "A+mlp", "A+none"]),
                               min_size=1, max_size=6))
        pattern = " ".join(layers)
        dims |= {"rope_fraction": 0.0, "ffn_gated": False, "tie_embeddings": False,
                 "ffn_bias": draw(st.booleans())}
    elif family == "zamba2":
        blocks = draw(st.integers(1, 2))
        runs = draw(st.lists(st.integers(0, 3), min_size=1, max_size=4))
        layers = []
        for k, run in enumerate(runs):
            layers += ["M2"] * run + [f"S{k % blocks}", "M2"]
        pattern = "(" + " ".join(layers) + ")+none"
        dims |= {"shared_lora_rank": draw(st.integers(0, 3)), "tie_embeddings": True,
                 "rope_fraction": draw(st.sampled_from([0.0, 1.0]))}
        if dims["n_kv_heads"] == heads:  # HF's k and v adapters write 2*d_model channels
            dims["shared_lora_attention"] = draw(st.booleans())
    else:  # recurrent_gemma
        cycle = draw(st.sampled_from(["R", "R L6", "R R L6"]))
        pattern = f"({cycle})*{n}"
        dims |= {"ffn_bias": True, "attn_out_bias": True, "rope_fraction": 0.5,
                 "lru_width": heads * draw(st.integers(2, 6)),
                 "attn_qkv_bias": draw(st.booleans())}
    return family, ArchConfig.from_pattern(pattern, **dims)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@given(_family_arch())
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_every_accepted_export_has_exactly_the_estimated_parameters(drawn):
    family, arch = drawn
    config = hf_config_object(arch, family)  # accepted: the drawn shapes are the family's own
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == estimate(arch).params
    again = from_hf(to_hf_config(arch, family))
    assert again.fingerprint() == arch.fingerprint()
