"""Hugging Face config families as data: which config key is which ArchConfig field.

One `Family` record per transformers config class. Both directions read it: importing a
config.json (`search_spaces.hf_import.from_hf`) and exporting an ArchConfig
(`nas.export.hf.to_hf_config`). A record says

    links     config key <-> ArchConfig field(s), with the value conversion both ways, written
              only where the layers use one of `kinds` (and read only then)
    fixed     config keys that the family's model needs at one value that ArchConfig has no
              field for (Jamba's mamba_proj_bias): export writes them, import refuses any other
    needs     ArchConfig fields the family's modules hard-code (Jamba's attention has no rotary
              embedding: rope_fraction must be 0): export refuses any other value, import sets
              it (and refuses a config whose linked key says otherwise)
    null_only keys the family's model reads but whose only value ours can represent is null
              (Jamba's sliding_window): import refuses any other value, export leaves them out
    ignored   keys that do not change the architecture (initialisation, kernels, dropout,
              special token ids, caching switches) on top of GENERIC_IGNORED
    layers    the keys that the family's own layer-sequence reader (in hf_import) and writer
              (in nas.export.hf) handle

so that adding a family, or a field to one, is an entry here plus its layer reader and writer.
Pure Python: nothing here imports transformers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from search_spaces.arch import ArchConfigError
from search_spaces.layers import (
    ATTENTION,
    LOCAL_ATTENTION,
    MAMBA,
    MAMBA2,
    MLP,
    MOE,
    RGLRU,
    SHARED,
)

#: Our activation names and the name each family's config uses for it (ACT2FN keys).
ACT_TO_HF = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu",
             "relu2": "relu2"}
#: Every ACT2FN name we read, aliases included (swish is silu; gelu_new and gelu_fast are the
#: tanh approximation written out).
HF_TO_ACT = {**{hf: ours for ours, hf in ACT_TO_HF.items()}, "swish": "silu",
             "gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu_python": "gelu"}

#: Keys of every transformers config that say nothing about the architecture.
GENERIC_IGNORED = frozenset({
    "_name_or_path", "architectures", "model_type", "transformers_version", "dtype",
    "torch_dtype", "id2label", "label2id", "problem_type", "return_dict", "output_attentions",
    "output_hidden_states", "is_encoder_decoder", "chunk_size_feed_forward", "use_cache",
    "initializer_range", "pad_token_id", "bos_token_id", "eos_token_id",
    "max_position_embeddings", "attention_dropout", "hidden_dropout", "output_router_logits",
    "router_aux_loss_coef", "num_logits_to_keep", "tie_encoder_decoder", "auto_map",
    "quantization_config", "_attn_implementation_autoset",
})
_MAMBA_RUNTIME = frozenset({
    "use_mamba_kernels", "use_mambapy", "use_associative_scan", "use_mem_eff_path",
    "chunk_size", "time_step_min", "time_step_max", "time_step_floor", "time_step_scale",
    "time_step_init_scheme", "time_step_limit", "rescale_prenorm_residual", "residual_in_fp32",
    "mamba_ssm_cache_dtype",
})


class HFConfigError(ArchConfigError):
    """A config that ArchConfig cannot represent; the message names every such field."""


def _same(value: Any, config: dict[str, Any]) -> Any:
    return value


def _arch_value(name: str) -> Callable[[Any], Any]:
    return lambda arch: getattr(arch, name)


@dataclass(frozen=True)
class Link:
    """Config key `hf` <-> the ArchConfig fields `ours` (several fields: one key sets them all,
    and export refuses them unequal). `encode(arch)` gives the config value, `decode(value,
    config)` ours; `default` is the config class's default where a published file may omit the
    key (None: the key is required)."""

    hf: str
    ours: tuple[str, ...]
    kinds: frozenset[str] = frozenset()
    encode: Callable[[Any], Any] | None = None
    decode: Callable[[Any, dict[str, Any]], Any] = _same
    default: Any = None

    @property
    def exported(self) -> bool:
        """False for a key that import only checks (an older file's name for a derived width)."""
        return bool(self.ours) or self.encode is not None

    def value_of(self, arch: Any) -> Any:
        return (self.encode or _arch_value(self.ours[0]))(arch)


def link(hf: str, ours: str | tuple[str, ...], *kinds: str, **options: Any) -> Link:
    return Link(hf, (ours,) if isinstance(ours, str) else ours, frozenset(kinds), **options)


@dataclass(frozen=True)
class Family:
    name: str
    config_class: str
    causal_lm: str
    links: tuple[Link, ...]
    layers: tuple[str, ...]
    fixed: dict[str, Any] = field(default_factory=dict)
    needs: dict[str, tuple[Any, str]] = field(default_factory=dict)
    null_only: frozenset[str] = frozenset()
    ignored: frozenset[str] = frozenset()

    def known_keys(self) -> frozenset[str]:
        return (GENERIC_IGNORED | self.ignored | self.null_only | set(self.fixed)
                | set(self.layers) | {link.hf for link in self.links})


# -- value conversions ---------------------------------------------------------------------------


def _act_to_hf(name: str) -> Callable[[Any], str]:
    return lambda arch: ACT_TO_HF[getattr(arch, name)]


def _act_from_hf(value: Any, config: dict[str, Any]) -> str:
    if value not in HF_TO_ACT:
        raise ValueError(f"activation {value!r} is none of ours "
                         f"({', '.join(sorted(HF_TO_ACT))})")
    return HF_TO_ACT[value]


def integer(value: Any) -> bool:
    """A positive integer, as a config.json gives widths and counts (true/false are not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def needed(config: dict[str, Any], key: str, default: Any = None) -> int:
    """A positive integer `key` that another key's conversion reads; a ValueError naming `key`
    when it is missing or is something else (so the problem names both keys)."""
    value = config.get(key, default)
    if value is None:
        raise ValueError(f"needs {key}, which is missing")
    if not integer(value):
        raise ValueError(f"needs {key} as a positive integer, not {value!r}")
    return value


def _whole(numerator: int, denominator: Any, what: str) -> int:
    if not integer(numerator) or not integer(denominator):
        raise ValueError(f"{what} = {numerator!r}/{denominator!r} needs positive integers")
    if numerator % denominator:
        raise ValueError(f"{what} = {numerator}/{denominator} is not a whole number")
    return numerator // denominator


def _check_head_dim(value: Any, config: dict[str, Any]) -> None:
    """head_dim must be hidden/heads (or unset): our heads split d_model evenly."""
    if value is None or config.get("num_attention_heads") is None:
        return None  # unset, or no heads to check against (that key's own problem)
    if not integer(value):
        raise ValueError("expected a positive integer")
    heads, hidden = needed(config, "num_attention_heads"), needed(config, "hidden_size")
    if value * heads != hidden:
        raise ValueError(f"head_dim {value} is not hidden_size/num_attention_heads = "
                         f"{hidden}/{heads} (ours split d_model into the heads)")
    return None


def rope_value(config: dict[str, Any], key: str, default: Any) -> Any:
    """`key` (rope_theta, partial_rotary_factor) read top-level or from `rope_parameters`
    (transformers 5 moves it there)."""
    if key in config:
        return config[key]
    parameters = config.get("rope_parameters") or {}
    return parameters.get(key, default) if isinstance(parameters, dict) else default


def _jamba_dt_rank(value: Any, config: dict[str, Any]) -> int:
    return math.ceil(needed(config, "hidden_size") / 16) if value == "auto" else value


def _check_mamba_head_dim(value: Any, config: dict[str, Any]) -> None:
    """NemotronH's mixer is mamba_num_heads * mamba_head_dim wide; ours expand * hidden_size."""
    inner = needed(config, "expand", 2) * needed(config, "hidden_size")
    if not integer(value) or value * needed(config, "mamba_num_heads") != inner:
        raise ValueError(f"mamba_num_heads * mamba_head_dim must be expand*hidden_size = {inner} "
                         "(ours sizes the mixer by expand)")
    return None


def _mamba2_heads(arch: Any) -> int:
    return arch.expand * arch.d_model // arch.m2_head_dim


def _head_dim_from_heads(expand_key: str) -> Callable[[Any, dict[str, Any]], int]:
    def decode(value: Any, config: dict[str, Any]) -> int:
        inner = needed(config, expand_key, 2) * needed(config, "hidden_size")
        return _whole(inner, value, f"{expand_key}*hidden_size / heads")
    return decode


def _use_mem_rope(fraction: float) -> bool:
    if fraction not in (0.0, 1.0):
        raise ValueError(f"rope_fraction={fraction}: Zamba2's use_mem_rope rotates whole heads "
                         "or none (1 or 0)")
    return fraction == 1.0


def _rope_fraction_from_flag(value: Any, config: dict[str, Any]) -> float:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return 1.0 if value else 0.0


def _check_inner(value: Any, config: dict[str, Any]) -> None:
    expected = needed(config, "expand", 2) * needed(config, "hidden_size")
    if value != expected:
        raise ValueError(f"intermediate_size {value} is not expand*hidden_size = {expected}")
    return None


def _check_heads(value: Any, config: dict[str, Any]) -> None:
    expected = (needed(config, "expand", 2) * needed(config, "hidden_size")
                // needed(config, "head_dim", 64))
    if value != expected:
        raise ValueError(f"num_heads {value} is not expand*hidden_size/head_dim = {expected}")
    return None


# -- links shared by several families ---------------------------------------------------------

_ATTN = (ATTENTION, LOCAL_ATTENTION, SHARED)
_FFN = (MLP, MOE)
_VOCAB = link("vocab_size", "vocab_size")
_HIDDEN = link("hidden_size", "d_model")
_HEADS = link("num_attention_heads", "n_heads", *_ATTN, RGLRU)
_KV_HEADS = link("num_key_value_heads", "n_kv_heads", *_ATTN,
                 default=lambda config: config.get("num_attention_heads"))  # no GQA
_HEAD_DIM = link("head_dim", (), *_ATTN, encode=lambda arch: arch.d_model // arch.n_heads,
                 decode=_check_head_dim)
_D_FF = link("intermediate_size", "d_ff", *_FFN)
_ROPE_THETA = link("rope_theta", "rope_theta", *_ATTN, default=10000.0)
_EXPERTS = ("moe_experts", "moe_top_k")


def _tie(default: bool) -> Link:
    return link("tie_word_embeddings", "tie_embeddings", default=default)


def _whole_heads_only(value: Any, config: dict[str, Any]) -> None:
    """Llama's attention applies RoPE to whole heads whatever partial_rotary_factor says (its
    rotary dim would then not match the head), so only 1 describes a model it builds."""
    if value != 1 and value != 1.0:
        raise ValueError("this family rotates whole heads (only 1 builds)")
    return None


def _llama_like(name: str, config_class: str, causal_lm: str, *extra: Link,
                layers: tuple[str, ...] = ("num_hidden_layers",)) -> Family:
    """Llama and its descendants: A (or L, Mistral's sliding window) + a gated MLP or MoE on
    every layer; biases only where `extra` links them."""
    linked = {name for extra_link in extra for name in extra_link.ours}
    no_bias = {name: (False, f"{config_class} has no {name.replace('_', ' ')}")
               for name in ("ffn_bias", "attn_qkv_bias", "attn_out_bias") if name not in linked}
    return Family(
        name, config_class, causal_lm,
        (_VOCAB, _HIDDEN, _tie(False), link("rms_norm_eps", "norm_eps", default=1e-6), _HEADS,
         _KV_HEADS, _HEAD_DIM, _D_FF, link("hidden_act", "ffn_act", *_FFN,
                                           encode=_act_to_hf("ffn_act"), decode=_act_from_hf,
                                           default="silu"),
         _ROPE_THETA, *extra,
         link("partial_rotary_factor", (), decode=_whole_heads_only)),
        layers=layers + ("rope_parameters", "rope_scaling"),
        needs={"ffn_gated": (True, f"{config_class}'s MLPs are gated"),
               "rope_fraction": (1.0, f"{config_class} rotates whole heads"),
               "moe_renormalize": (True, f"{config_class}'s router renormalises its top-k "
                                         "weights"), **no_bias},
        ignored=frozenset({"pretraining_tp", "router_jitter_noise", "mlp_only_layers"}))


FAMILIES: dict[str, Family] = {family.name: family for family in (
    Family(
        "jamba", "JambaConfig", "JambaForCausalLM",
        (_VOCAB, _HIDDEN, _tie(False), link("rms_norm_eps", "norm_eps", default=1e-6),
         link("intermediate_size", "d_ff"),
         link("hidden_act", "ffn_act", encode=_act_to_hf("ffn_act"), decode=_act_from_hf,
              default="silu"),
         link("num_attention_heads", "n_heads", ATTENTION),
         link("num_key_value_heads", "n_kv_heads", ATTENTION),
         link("mamba_d_state", "d_state", MAMBA), link("mamba_d_conv", "d_conv", MAMBA),
         link("mamba_expand", "expand", MAMBA),
         link("mamba_dt_rank", "dt_rank", MAMBA, decode=_jamba_dt_rank, default="auto"),
         link("num_experts", "moe_experts", MOE), link("num_experts_per_tok", "moe_top_k", MOE)),
        layers=("num_hidden_layers", "attn_layer_period", "attn_layer_offset",
                "expert_layer_period", "expert_layer_offset", "num_experts",
                "num_experts_per_tok"),
        fixed={"mamba_conv_bias": True, "mamba_proj_bias": False},
        needs={"ffn_gated": (True, "JambaConfig's MLPs are gated"),
               "ffn_bias": (False, "JambaConfig's MLPs have no biases"),
               "attn_qkv_bias": (False, "JambaAttention has no biases"),
               "attn_out_bias": (False, "JambaAttention has no biases"),
               "rope_fraction": (0.0, "JambaAttention has no rotary embedding"),
               "mamba_inner_norms": (True, "JambaMambaMixer norms dt, B and C"),
               "moe_renormalize": (False, "Jamba's router keeps the top-k softmax weights as "
                                          "they are")},
        null_only=frozenset({"sliding_window"}),
        ignored=_MAMBA_RUNTIME),
    Family(
        "nemotron_h", "NemotronHConfig", "NemotronHForCausalLM",
        (_VOCAB, _HIDDEN, _tie(False), link("layer_norm_epsilon", "norm_eps", default=1e-5),
         link("num_attention_heads", "n_heads", ATTENTION),
         link("num_key_value_heads", "n_kv_heads", ATTENTION),
         link("head_dim", (), ATTENTION, encode=lambda arch: arch.d_model // arch.n_heads,
              decode=_check_head_dim),
         link("attention_head_dim", (), ATTENTION, decode=_check_head_dim),  # older files
         link("intermediate_size", "d_ff", MLP),
         link("mlp_hidden_act", "ffn_act", MLP, encode=_act_to_hf("ffn_act"),
              decode=_act_from_hf, default="relu2"),
         link("mlp_bias", "ffn_bias", MLP, default=False),
         link("ssm_state_size", "m2_d_state", MAMBA2),
         link("mamba_num_heads", "m2_head_dim", MAMBA2, encode=_mamba2_heads,
              decode=_head_dim_from_heads("expand")),
         link("mamba_head_dim", (), MAMBA2, encode=_arch_value("m2_head_dim"),
              decode=_check_mamba_head_dim),
         link("n_groups", "m2_n_groups", MAMBA2), link("conv_kernel", "d_conv", MAMBA2),
         link("expand", "expand", MAMBA2)),
        layers=("hybrid_override_pattern", "layers_block_type", "num_hidden_layers"),
        fixed={"attention_bias": False, "use_bias": False, "use_conv_bias": True,
               "mamba_proj_bias": False, "mamba_hidden_act": "silu",
               "num_nextn_predict_layers": 0},
        null_only=frozenset({"sliding_window"}),
        needs={"ffn_gated": (False, "NemotronHMLP is not gated (up, act, down)"),
               "attn_qkv_bias": (False, "NemotronHAttention has no biases"),
               "attn_out_bias": (False, "NemotronHAttention has no biases"),
               "rope_fraction": (0.0, "NemotronHAttention has no rotary embedding"),
               "tie_embeddings": (False, "NemotronHForCausalLM never ties lm_head to the "
                                         "embeddings")},
        ignored=_MAMBA_RUNTIME | {"mtp_layers_block_type", "mtp_hybrid_override_pattern",
                                  "rms_norm_eps",  # older files; no module reads it
                                  # MoE keys, read only where an E layer makes them count
                                  "n_routed_experts", "n_shared_experts", "num_experts_per_tok",
                                  "moe_intermediate_size", "moe_shared_expert_intermediate_size",
                                  "moe_latent_size", "moe_shared_expert_overlap", "n_group",
                                  "topk_group", "norm_topk_prob", "routed_scaling_factor"}),
    Family(
        "zamba2", "Zamba2Config", "Zamba2ForCausalLM",
        (_VOCAB, _HIDDEN, _tie(True), link("rms_norm_eps", "norm_eps", default=1e-5),
         link("mamba_d_state", "m2_d_state", MAMBA2), link("mamba_d_conv", "d_conv", MAMBA2),
         link("mamba_expand", "expand", MAMBA2), link("mamba_ngroups", "m2_n_groups", MAMBA2),
         link("n_mamba_heads", "m2_head_dim", MAMBA2, encode=_mamba2_heads,
              decode=_head_dim_from_heads("mamba_expand")),
         link("num_attention_heads", "n_heads", SHARED),
         link("num_key_value_heads", "n_kv_heads", SHARED),
         link("intermediate_size", "d_ff", SHARED),
         link("hidden_act", "ffn_act", SHARED, encode=_act_to_hf("ffn_act"),
              decode=_act_from_hf, default="gelu"),
         link("use_mem_rope", "rope_fraction", SHARED,
              encode=lambda arch: _use_mem_rope(arch.rope_fraction),
              decode=_rope_fraction_from_flag, default=False),
         link("rope_theta", "rope_theta", SHARED, default=10000.0),
         link("adapter_rank", "shared_lora_rank", SHARED, default=128),
         link("use_shared_attention_adapter", "shared_lora_attention", SHARED, default=False)),
        layers=("layers_block_type", "hybrid_layer_ids", "num_hidden_layers", "num_mem_blocks",
                "rope_parameters"),
        fixed={"use_conv_bias": True, "use_long_context": False, "add_bias_linear": False},
        needs={"ffn_gated": (True, "Zamba2MLP is gated"),
               "tie_embeddings": (True, "Zamba2ForCausalLM shares its blocks' weights only "
                                        "when it ties the embeddings (transformers 5.24)"),
               "ffn_bias": (False, "Zamba2's add_bias_linear would also put biases on its "
                                   "Mamba-2 projections, which ours lack"),
               "attn_qkv_bias": (False, "Zamba2Attention has no biases"),
               "attn_out_bias": (False, "Zamba2Attention has no biases")},
        # derived from the keys above by the config class itself
        ignored=_MAMBA_RUNTIME | {"attention_hidden_size", "attention_head_dim",
                                  "mamba_headdim", "kv_channels", "num_query_groups",
                                  "ffn_hidden_size"}),
    Family(
        "recurrent_gemma", "RecurrentGemmaConfig", "RecurrentGemmaForCausalLM",
        (_VOCAB, _HIDDEN, _tie(True), link("rms_norm_eps", "norm_eps", default=1e-6),
         link("num_attention_heads", "n_heads"),  # also the RG-LRU gates' block count
         link("num_key_value_heads", "n_kv_heads", LOCAL_ATTENTION),
         link("head_dim", (), LOCAL_ATTENTION, encode=lambda arch: arch.d_model // arch.n_heads,
              decode=_check_head_dim),
         # RecurrentGemmaMlp uses intermediate_size // 2 for each of gate and up
         link("intermediate_size", "d_ff", encode=lambda arch: 2 * arch.d_ff,
              decode=lambda value, config: _whole(value, 2, "intermediate_size / 2")),
         link("hidden_activation", "ffn_act", encode=_act_to_hf("ffn_act"), decode=_act_from_hf,
              default="gelu_pytorch_tanh"),
         link("attention_bias", "attn_qkv_bias", LOCAL_ATTENTION, default=False),
         link("rope_theta", "rope_theta", LOCAL_ATTENTION, default=10000.0),
         link("partial_rotary_factor", "rope_fraction", LOCAL_ATTENTION, default=0.5),
         link("lru_width", "lru_width", RGLRU), link("conv1d_width", "d_conv", RGLRU)),
        layers=("num_hidden_layers", "block_types", "attention_window_size", "rope_parameters"),
        fixed={"logits_soft_cap": 30.0},
        needs={"ffn_gated": (True, "RecurrentGemmaMlp is gated"),
               "ffn_bias": (True, "RecurrentGemmaMlp's linears have biases"),
               "attn_out_bias": (True, "RecurrentGemma's attention output has a bias")},
        ignored=frozenset({"w_init_variance_scale", "final_w_init_variance_scale",
                           "embeddings_scale_by_sqrt_dim"})),
    Family(
        "mamba", "MambaConfig", "MambaForCausalLM",
        (_VOCAB, _HIDDEN, _tie(True), link("layer_norm_epsilon", "norm_eps", default=1e-5),
         link("state_size", "d_state", MAMBA), link("expand", "expand", MAMBA),
         link("conv_kernel", "d_conv", MAMBA),
         link("time_step_rank", "dt_rank", MAMBA, decode=_jamba_dt_rank, default="auto"),
         link("intermediate_size", (), MAMBA, encode=lambda arch: arch.expand * arch.d_model,
              decode=_check_inner)),
        layers=("num_hidden_layers",),
        fixed={"use_bias": False, "use_conv_bias": True, "hidden_act": "silu"},
        needs={"mamba_inner_norms": (False, "MambaMixer has no norms on dt, B and C")},
        ignored=_MAMBA_RUNTIME | {"n_layer"}),  # the original code's name of num_hidden_layers
    Family(
        "mamba2", "Mamba2Config", "Mamba2ForCausalLM",
        (_VOCAB, _HIDDEN, _tie(False), link("layer_norm_epsilon", "norm_eps", default=1e-5),
         link("state_size", "m2_d_state", MAMBA2), link("expand", "expand", MAMBA2),
         link("conv_kernel", "d_conv", MAMBA2), link("n_groups", "m2_n_groups", MAMBA2),
         link("head_dim", "m2_head_dim", MAMBA2),
         link("num_heads", (), MAMBA2, encode=_mamba2_heads,
              decode=_check_heads)),
        layers=("num_hidden_layers",),
        fixed={"use_bias": False, "use_conv_bias": True, "hidden_act": "silu",
               "norm_before_gate": False, "rms_norm": True},
        ignored=_MAMBA_RUNTIME | {"time_step_rank"}),  # Mamba2Mixer never reads it
    _llama_like("llama", "LlamaConfig", "LlamaForCausalLM",
                link("attention_bias", ("attn_qkv_bias", "attn_out_bias"), ATTENTION,
                     default=False),
                link("mlp_bias", "ffn_bias", MLP, default=False)),
    _llama_like("mistral", "MistralConfig", "MistralForCausalLM",
                layers=("num_hidden_layers", "sliding_window")),
    _llama_like("mixtral", "MixtralConfig", "MixtralForCausalLM",
                link("num_local_experts", "moe_experts", MOE),
                link("num_experts_per_tok", "moe_top_k", MOE),
                layers=("num_hidden_layers", "sliding_window")),
)}
