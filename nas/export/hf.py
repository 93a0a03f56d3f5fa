"""Export an ArchConfig as a Hugging Face transformers config, where one of four families fits.

Pure functions of the ArchConfig: `to_hf_config` returns the config's keyword arguments (plus
`model_type` and `architectures`, so the dict is also what `config.json` says), and only
`hf_config_object` imports transformers. A pattern that a family cannot express is refused with
an `HFExportError` naming the feature and the layer, never exported as a different layer kind.

What maps to what (our layer index i; d = d_model):

    jamba            M -> Mamba-1 layer, A -> attention layer; every layer has an MLP or an MoE.
                     Attention and MoE layers must each sit at i % period == offset
                     (attn_layer_period/offset, expert_layer_period/offset).
    nemotron_h       each of our layers becomes a mixer entry (M2 -> "M", A -> "*") followed by
                     its FFN entry (mlp -> "-", moe -> "E", none -> nothing):
                     `hybrid_override_pattern`, num_hidden_layers = its length.
    zamba2           "S<id> M2" (both without FFN) -> one "hybrid" layer (Zamba2 runs the shared
                     block first and feeds its output into that layer's Mamba-2); a lone M2 ->
                     "linear_attention" (a Mamba-2 layer). Shared blocks are used round-robin
                     (the k-th hybrid layer uses block k % num_mem_blocks), so our block ids, named
                     in order of first use, must repeat 0, 1, ..., n-1, 0, 1, ...
    recurrent_gemma  R -> "recurrent", L<w> -> "attention" with one attention_window_size = w;
                     every layer has an MLP. `block_types` is the shortest cycle of the pattern.

Widths: hidden_size = d, vocab_size, tie_word_embeddings, the norm eps, heads and KV heads,
intermediate_size = d_ff (RecurrentGemma halves its intermediate_size, so it gets 2*d_ff), Mamba
d_state/d_conv/expand/dt_rank, Mamba-2 state/head dim/groups/heads (= expand*d/m2_head_dim),
experts and top-k, lru_width, conv width, window, rope theta. A family's group of widths is
written only when the pattern uses that layer kind (unused Mamba-2 widths need not even divide).
pad/bos/eos token ids are None: ours define no special tokens, and a pad id would make that
token's embedding row zero and frozen (`nn.Embedding(padding_idx=...)`).

Differences that the HF models have and these configs cannot express (the layer kinds and the
widths above are exact; these are not):

    all              HF norms, initialisation and some biases differ in detail.
    jamba            attention has no positional embedding (ours: RoPE); the Mamba mixer adds
                     RMSNorms on dt, B and C; the MoE router does not renormalise its top-k
                     softmax weights (ours does).
    nemotron_h       attention has no positional embedding; MLPs and experts are not gated
                     (up -> act -> down, we set act = silu; ours SwiGLU); every MoE adds an
                     always-on shared expert (width d_ff here: width 0 silently falls back to
                     intermediate_size) and routes by sigmoid scores; the Mamba-2 gated norm is
                     grouped by n_groups (ours spans d_inner); and NemotronHForCausalLM (5.x)
                     never ties lm_head to the embeddings, whatever tie_word_embeddings says.
    zamba2           the shared block's output is added to the following Mamba-2 layer's input
                     only, not to the residual stream (ours adds it to the stream, then the
                     Mamba-2 layer reads it); no residual around the shared attention, and
                     concat(h, emb) is taken before the norm of h; attention scores are scaled by
                     (head_dim/2)^-0.5; per-invocation LoRA adapters on the shared MLP have no
                     counterpart in ours, so adapter_rank = 0 makes them empty.
    recurrent_gemma  the MLP is GeGLU with biases (hidden_activation also drives the recurrent
                     block's gate, which is GeLU in ours, so we set exact "gelu"); embeddings are
                     scaled by sqrt(d); logits are soft-capped at logits_soft_cap (30); the
                     attention output projection has a bias. RoPE spans the whole head
                     (partial_rotary_factor = 1.0, as ours; HF's default is 0.5).

Silent conversions in the HF configs that the refusals and `hf_config_object`'s read-back
guard against: Jamba turns any layer off the period into Mamba and any layer into an MLP when
num_experts is 1; Zamba2 builds a Mamba layer for any entry that is not "hybrid";
RecurrentGemma builds attention for any entry that is not "recurrent" and repeats block_types
only 100 times; NemotronH ignores num_hidden_layers; every config accepts unknown keys.
Checked against transformers 5.24, where a forward with the default use_cache=True fails on a
model with no attention layer (e.g. pure Mamba-2): pass use_cache=False there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from search_spaces.arch import ArchConfig
from search_spaces.layers import (
    ATTENTION,
    LOCAL_ATTENTION,
    MAMBA,
    MAMBA2,
    MIXER_NAMES,
    MLP,
    MOE,
    NO_FFN,
    RGLRU,
    SHARED,
    Layer,
)

HF_FAMILIES = ("jamba", "nemotron_h", "zamba2", "recurrent_gemma")
INSTALL_HINT = "pip install 'hybrid-nas[hf]'"
#: RecurrentGemma repeats block_types this many times, then truncates to num_hidden_layers.
RG_BLOCK_REPEATS = 100

# How a refusal names a layer kind; "attention" alone would not say why RecurrentGemma refuses A.
_FEATURE = {**MIXER_NAMES, ATTENTION: "full attention"}


class HFExportError(ValueError):
    """An architecture that a Hugging Face config family cannot express; the message names the
    feature (and the layer) that stops it."""


# -- helpers ----------------------------------------------------------------------------------


def _name(layer: Layer, with_ffn: bool = False) -> str:
    """The layer as written in a pattern, its argument always shown (S0, not S)."""
    return layer.token(default_ffn=None if with_ffn else layer.ffn, default_shared_id=-1)


def _no_equivalent(index: int, layer: Layer, cls: str, why: str = "") -> HFExportError:
    message = f"layer {index} ({_name(layer)}): {_FEATURE[layer.mixer]} has no equivalent in {cls}"
    return HFExportError(message + (f" ({why})" if why else ""))


def _common(arch: ArchConfig, family: str) -> dict[str, Any]:
    spec = _SPECS[family]
    return {
        "model_type": family,
        "architectures": [spec.causal_lm],
        "vocab_size": arch.vocab_size,
        "hidden_size": arch.d_model,
        "tie_word_embeddings": arch.tie_embeddings,
        # Ours define no special tokens; a pad id would also zero and freeze one embedding row.
        "pad_token_id": None,
        "bos_token_id": None,
        "eos_token_id": None,
    }


def _check_moe(arch: ArchConfig, cls: str) -> None:
    if MOE in arch.kinds and arch.moe_experts < 2:
        raise HFExportError(f"MoE with moe_experts={arch.moe_experts} has no equivalent in {cls} "
                            "(it needs at least 2 experts; with 1 it builds a plain MLP or fails)")


def _periodic(positions: list[int], depth: int) -> tuple[int, int] | None:
    """(period, offset) with {i < depth: i % period == offset} == positions, or None."""
    if not positions:
        return depth + 1, depth  # offset < period, and no i < depth reaches it
    if len(positions) == 1:
        return depth, positions[0]  # one period covering the whole stack
    period = positions[1] - positions[0]
    steps_equal = all(b - a == period for a, b in zip(positions, positions[1:]))
    if steps_equal and positions[0] < period and positions[-1] + period >= depth:
        return period, positions[0]
    return None


def _shortest_cycle(items: list[str]) -> list[str]:
    for period in range(1, len(items) + 1):
        if all(items[i] == items[i % period] for i in range(len(items))):
            return items[:period]
    return items


# -- one builder per family -------------------------------------------------------------------


def _jamba(arch: ArchConfig) -> dict[str, Any]:
    cls = "JambaConfig"
    for i, layer in enumerate(arch.layers):
        if layer.mixer not in (MAMBA, ATTENTION):
            why = "its Mamba layers are Mamba-1" if layer.mixer == MAMBA2 else ""
            raise _no_equivalent(i, layer, cls, why)
        if layer.ffn == NO_FFN:
            raise HFExportError(f"layer {i} ({_name(layer, True)}): a layer without an FFN has no "
                                f"equivalent in {cls} (every Jamba layer has an MLP or an MoE)")
    _check_moe(arch, cls)
    depth = arch.depth
    placed = {}
    for what, kind, prefix in (("attention", ATTENTION, "attn"), ("MoE", MOE, "expert")):
        where = [i for i, layer in enumerate(arch.layers) if kind in (layer.mixer, layer.ffn)]
        found = _periodic(where, depth)
        if found is None:
            raise HFExportError(
                f"{what} at layers {', '.join(map(str, where))} is not periodic: {cls} places "
                f"{what} at the layers i with i % {prefix}_layer_period == {prefix}_layer_offset")
        placed[f"{prefix}_layer_period"], placed[f"{prefix}_layer_offset"] = found
    config = _common(arch, "jamba") | placed | {
        "num_hidden_layers": depth,
        "intermediate_size": arch.d_ff,
        "hidden_act": "silu",
        "rms_norm_eps": arch.norm_eps,
    }
    if ATTENTION in arch.kinds:
        config |= {"num_attention_heads": arch.n_heads, "num_key_value_heads": arch.n_kv_heads}
    if MAMBA in arch.kinds:
        config |= {"mamba_d_state": arch.d_state, "mamba_d_conv": arch.d_conv,
                   "mamba_expand": arch.expand, "mamba_dt_rank": arch.dt_rank,
                   "mamba_conv_bias": True, "mamba_proj_bias": False}
    if MOE in arch.kinds:
        config |= {"num_experts": arch.moe_experts, "num_experts_per_tok": arch.moe_top_k}
    else:  # Jamba's own way of saying "no MoE": one expert builds the plain MLP everywhere
        config |= {"num_experts": 1, "num_experts_per_tok": 1}
    return config


def _mamba2_heads(arch: ArchConfig) -> int:
    return arch.expand * arch.d_model // arch.m2_head_dim


def _nemotron_h(arch: ArchConfig) -> dict[str, Any]:
    cls = "NemotronHConfig"
    mixer_char = {MAMBA2: "M", ATTENTION: "*"}
    ffn_char = {MLP: "-", MOE: "E", NO_FFN: ""}
    chars = []
    for i, layer in enumerate(arch.layers):
        if layer.mixer not in mixer_char:
            why = "its M layers are Mamba-2" if layer.mixer == MAMBA else ""
            raise _no_equivalent(i, layer, cls, why)
        chars.append(mixer_char[layer.mixer] + ffn_char[layer.ffn])
    _check_moe(arch, cls)
    pattern = "".join(chars)
    config = _common(arch, "nemotron_h") | {
        # The legacy key (still read by 5.x) works in every release that has NemotronH.
        "hybrid_override_pattern": pattern,
        "num_hidden_layers": len(pattern),
        "layer_norm_epsilon": arch.norm_eps,
    }
    if ATTENTION in arch.kinds:
        config |= {"num_attention_heads": arch.n_heads, "num_key_value_heads": arch.n_kv_heads,
                   "head_dim": arch.d_model // arch.n_heads}  # HF default is 128, not d/heads
    if MAMBA2 in arch.kinds:
        config |= {"ssm_state_size": arch.m2_d_state, "mamba_num_heads": _mamba2_heads(arch),
                   "mamba_head_dim": arch.m2_head_dim, "n_groups": arch.m2_n_groups,
                   "conv_kernel": arch.d_conv, "expand": arch.expand, "mamba_hidden_act": "silu"}
    if kinds_ffn := arch.kinds & {MLP, MOE}:
        config |= {"intermediate_size": arch.d_ff, "mlp_hidden_act": "silu"}
    if MOE in kinds_ffn:
        config |= {"n_routed_experts": arch.moe_experts, "num_experts_per_tok": arch.moe_top_k,
                   "moe_intermediate_size": arch.d_ff, "n_shared_experts": 1,
                   "moe_shared_expert_intermediate_size": arch.d_ff, "norm_topk_prob": True,
                   "n_group": 1, "topk_group": 1}
    return config


def _zamba2(arch: ArchConfig) -> dict[str, Any]:
    cls = "Zamba2Config"
    layers = arch.layers
    block_types: list[str] = []
    block_ids: list[int] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        if layer.mixer not in (MAMBA2, SHARED):
            why = "its Mamba layers are Mamba-2" if layer.mixer == MAMBA else ""
            raise _no_equivalent(i, layer, cls, why)
        if layer.ffn != NO_FFN:
            raise HFExportError(
                f"layer {i} ({_name(layer, True)}): an FFN after a {_FEATURE[layer.mixer]} has no "
                f"equivalent in {cls} (only the shared block has an MLP)")
        if layer.mixer == MAMBA2:
            block_types.append("linear_attention")
            i += 1
            continue
        follower = layers[i + 1] if i + 1 < len(layers) else None
        if follower is None or follower.mixer != MAMBA2 or follower.ffn != NO_FFN:
            after = "the end" if follower is None else f"layer {i + 1} ({_name(follower, True)})"
            raise HFExportError(
                f"layer {i} ({_name(layer)}): a shared block followed by {after} has no "
                f"equivalent in {cls} (a hybrid layer runs the shared block, then a Mamba-2 "
                "layer without FFN)")
        block_types.append("hybrid")
        block_ids.append(layer.arg)
        i += 2
    # Block ids are labels: name them by first use, then Zamba2's k % num_mem_blocks must hold.
    first_use = list(dict.fromkeys(block_ids))
    n_blocks = max(len(first_use), 1)
    relabelled = [first_use.index(b) for b in block_ids]
    if relabelled != [k % n_blocks for k in range(len(block_ids))]:
        written = " ".join(f"S{b}" for b in block_ids)
        raise HFExportError(
            f"shared blocks {written} are not used round-robin: {cls} gives its hybrid layers "
            f"the num_mem_blocks={n_blocks} shared blocks in turn (each block once before any "
            "repeats)")
    config = _common(arch, "zamba2") | {
        "layers_block_type": block_types,
        "num_hidden_layers": len(block_types),
        "num_mem_blocks": n_blocks,
        "rms_norm_eps": arch.norm_eps,
        "mamba_d_state": arch.m2_d_state,
        "mamba_d_conv": arch.d_conv,
        "mamba_expand": arch.expand,
        "mamba_ngroups": arch.m2_n_groups,
        "n_mamba_heads": _mamba2_heads(arch),
    }
    if block_ids:
        config |= {"num_attention_heads": arch.n_heads, "num_key_value_heads": arch.n_kv_heads,
                   "intermediate_size": arch.d_ff, "hidden_act": "silu",  # gated: SwiGLU
                   "use_mem_rope": True, "rope_theta": arch.rope_theta,
                   "use_shared_attention_adapter": False, "adapter_rank": 0}
    return config


def _recurrent_gemma(arch: ArchConfig) -> dict[str, Any]:
    cls = "RecurrentGemmaConfig"
    kinds = []
    for i, layer in enumerate(arch.layers):
        if layer.mixer not in (RGLRU, LOCAL_ATTENTION):
            why = "its attention is always local" if layer.mixer == ATTENTION else ""
            raise _no_equivalent(i, layer, cls, why)
        if layer.ffn != MLP:
            feature = "an MoE" if layer.ffn == MOE else "a layer without an MLP"
            raise HFExportError(f"layer {i} ({_name(layer, True)}): {feature} has no equivalent "
                                f"in {cls} (every layer has one MLP)")
        kinds.append("recurrent" if layer.mixer == RGLRU else "attention")
    windows = sorted({layer.arg for layer in arch.layers if layer.mixer == LOCAL_ATTENTION})
    if len(windows) > 1:
        raise HFExportError(f"local attention windows {', '.join(map(str, windows))} differ: {cls} "
                            "has one attention_window_size")
    cycle = _shortest_cycle(kinds)
    if len(cycle) * RG_BLOCK_REPEATS < len(kinds):  # HF would run out of repeats
        cycle = kinds
    config = _common(arch, "recurrent_gemma") | {
        "num_hidden_layers": arch.depth,
        "block_types": cycle,
        "num_attention_heads": arch.n_heads,  # also the RG-LRU gates' block count
        "intermediate_size": 2 * arch.d_ff,  # RecurrentGemmaMlp uses intermediate_size // 2
        "hidden_activation": "gelu",
        "rms_norm_eps": arch.norm_eps,
    }
    if windows:
        config |= {"num_key_value_heads": arch.n_kv_heads, "attention_window_size": windows[0],
                   "rope_theta": arch.rope_theta, "partial_rotary_factor": 1.0}
    if RGLRU in arch.kinds:
        config |= {"lru_width": arch.lru_width, "conv1d_width": arch.d_conv}
    return config


# -- reading a built config back as our layer sequence ----------------------------------------


def _expected(arch: ArchConfig) -> list[str]:
    """Our layers in the vocabulary `_read_back` uses: mixer kind, "+" FFN kind."""
    return [f"{layer.mixer}+{layer.ffn}" for layer in arch.layers]


def _read_jamba(config: Any) -> list[str]:
    return [f"{'A' if kind in ('attention', 'full_attention') else 'M'}+"
            f"{'moe' if experts > 1 else 'mlp'}"
            for kind, experts in zip(config.layers_block_type, config.layers_num_experts)]


def _read_nemotron_h(config: Any) -> list[str]:
    mixers = {"linear_attention": MAMBA2, "mamba": MAMBA2, "full_attention": ATTENTION,
              "attention": ATTENTION}
    ffns = {"mlp": MLP, "moe": MOE}
    out: list[list[str]] = []
    for kind in config.layers_block_type:
        if kind in mixers:
            out.append([mixers[kind], NO_FFN])
        elif out and out[-1][1] == NO_FFN and kind in ffns:
            out[-1][1] = ffns[kind]
        else:
            out.append(["?" + kind, NO_FFN])
    return [f"{mixer}+{ffn}" for mixer, ffn in out]


def _read_zamba2(config: Any) -> list[str]:
    out = []
    for kind in config.layers_block_type:
        if kind == "hybrid":
            out.append(f"{SHARED}+{NO_FFN}")
        out.append(f"{MAMBA2}+{NO_FFN}")
    return out


def _read_recurrent_gemma(config: Any) -> list[str]:
    return [f"{RGLRU if kind == 'linear_attention' else LOCAL_ATTENTION}+{MLP}"
            for kind in config.layers_block_type]


@dataclass(frozen=True)
class _Spec:
    config_class: str
    causal_lm: str
    build: Callable[[ArchConfig], dict[str, Any]]
    read_back: Callable[[Any], list[str]]


_SPECS = {
    "jamba": _Spec("JambaConfig", "JambaForCausalLM", _jamba, _read_jamba),
    "nemotron_h": _Spec("NemotronHConfig", "NemotronHForCausalLM", _nemotron_h, _read_nemotron_h),
    "zamba2": _Spec("Zamba2Config", "Zamba2ForCausalLM", _zamba2, _read_zamba2),
    "recurrent_gemma": _Spec("RecurrentGemmaConfig", "RecurrentGemmaForCausalLM",
                             _recurrent_gemma, _read_recurrent_gemma),
}


def _spec(family: str) -> _Spec:
    if family not in _SPECS:
        raise HFExportError(f"unknown Hugging Face family {family!r}; valid: "
                            f"{', '.join(HF_FAMILIES)}")
    return _SPECS[family]


# -- public API -------------------------------------------------------------------------------


def to_hf_config(arch: ArchConfig, family: str) -> dict[str, Any]:
    """The transformers config of `family` for `arch`, as a JSON-ready dict of its keyword
    arguments plus `model_type` and `architectures`. Raises HFExportError naming what does not
    fit. Needs no transformers."""
    return _spec(family).build(arch)


def hf_families_for(arch: ArchConfig) -> dict[str, str | None]:
    """For each of HF_FAMILIES: None where `arch` fits, else the one-line reason it does not."""
    reasons: dict[str, str | None] = {}
    for family in HF_FAMILIES:
        try:
            to_hf_config(arch, family)
        except HFExportError as error:
            reasons[family] = str(error)
        else:
            reasons[family] = None
    return reasons


def hf_config_object(arch: ArchConfig, family: str) -> Any:
    """The instantiated transformers config (e.g. `JambaConfig`) for `arch`.

    After building it, reads the layer sequence back from the config's own properties and
    raises HFExportError if transformers understood another one (the configs turn unknown or
    misplaced entries into other layer kinds without a word)."""
    spec = _spec(family)
    kwargs = to_hf_config(arch, family)
    try:
        import transformers
    except ImportError as error:
        raise ImportError(f"exporting to Hugging Face configs needs transformers: "
                          f"{INSTALL_HINT}") from error
    config_class = getattr(transformers, spec.config_class, None)
    if config_class is None:
        raise ImportError(f"transformers {transformers.__version__} has no {spec.config_class}: "
                          f"pip install -U 'hybrid-nas[hf]'")
    kwargs.pop("model_type")  # a class attribute of the config class, not an argument
    config = config_class(**kwargs)
    got, want = spec.read_back(config), _expected(arch)
    if got != want:
        raise HFExportError(f"transformers {transformers.__version__} reads this "
                            f"{spec.config_class} as layers {got}, not {want}")
    return config
