"""Export an ArchConfig as a Hugging Face transformers config, where one of nine families fits.

Pure functions of the ArchConfig: `to_hf_config` returns the config's keyword arguments (plus
`model_type` and `architectures`, so the dict is also what `config.json` says), and only
`hf_config_object` imports transformers. Which config key is which ArchConfig field, which
keys a family fixes and which of our options its modules hard-code is data, shared with the
importer: `search_spaces.hf_families`. This module adds each family's layer-sequence writer.
A pattern or an option that a family cannot express is refused with an `HFExportError` naming
the feature and the layer, or the field, the value it needs and why; never exported as
something else. For every accepted architecture the HF model's parameter count equals the
toolkit's `estimate(arch).params` (tests build each family on the meta device).

Layer sequences (our layer index i; d = d_model):

    jamba            M -> Mamba-1 layer, A -> attention layer; every layer has an MLP or an MoE.
                     Attention and MoE layers must each sit at i % period == offset
                     (attn_layer_period/offset, expert_layer_period/offset).
    nemotron_h       each of our layers becomes a mixer entry (M2 -> "M", A -> "*") followed by
                     its FFN entry (mlp -> "-", none -> nothing): `hybrid_override_pattern`.
                     Its MoE ("E") is refused: it adds an always-on shared expert and a routing
                     bias that ours lacks.
    zamba2           "S<id> M2" (both without FFN) -> one "hybrid" layer (Zamba2 runs the shared
                     block first and feeds its output into that layer's Mamba-2); a lone M2 ->
                     "linear_attention" (a Mamba-2 layer). Shared blocks are used round-robin
                     (the k-th hybrid layer uses block k % num_mem_blocks), so our block ids, named
                     in order of first use, must repeat 0, 1, ..., n-1, 0, 1, ...
    recurrent_gemma  R -> "recurrent", L<w> -> "attention" with one attention_window_size = w;
                     every layer has an MLP. `block_types` is the shortest cycle of the pattern.
    mamba, mamba2    M+none (M2+none) on every layer.
    llama            A+mlp on every layer.
    mistral, mixtral A+mlp (A+moe) on every layer, or L<w> with one window (sliding_window).

Differences that remain between the HF models and ours, none of them a parameter or a field
(llama, mistral, mixtral, jamba, mamba, mamba2 and nemotron_h compute the same logits from the
same weights: tests/test_hf_import.py loads HF's weights into ours and compares):

    all              HF initialisation differs.
    zamba2           the shared block's output is added to the following Mamba-2 layer's input
                     only, not to the residual stream (ours adds it to the stream, then the
                     Mamba-2 layer reads it); no residual around the shared attention; attention
                     scores are scaled by (head_dim/2)^-0.5.
    recurrent_gemma  embeddings are scaled by sqrt(d); logits are soft-capped at 30;
                     hidden_activation also drives the recurrent block's gate (GeLU in ours);
                     the RG-LRU leaves the first token's input unscaled (ours scales it by
                     sqrt(1 - a^2) as every other); its Lambda has the opposite sign to ours;
                     its RMSNorms scale by 1 + weight.

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
from search_spaces.errors import UserError
from search_spaces.hf_families import FAMILIES, Family
from search_spaces.hf_import import READERS
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

HF_FAMILIES = tuple(FAMILIES)
INSTALL_HINT = "pip install 'hybrid-nas[hf]'"
#: RecurrentGemma repeats block_types this many times, then truncates to num_hidden_layers.
RG_BLOCK_REPEATS = 100

# How a refusal names a layer kind; "attention" alone would not say why RecurrentGemma refuses A.
_FEATURE = {**MIXER_NAMES, ATTENTION: "full attention"}


class HFExportError(UserError):
    """An architecture that a Hugging Face config family cannot express; the message names the
    feature (and the layer) that stops it."""


# -- helpers ----------------------------------------------------------------------------------


def _name(layer: Layer, with_ffn: bool = False) -> str:
    """The layer as written in a pattern, its argument always shown (S0, not S)."""
    return layer.token(default_ffn=None if with_ffn else layer.ffn, default_shared_id=-1)


def _no_equivalent(index: int, layer: Layer, cls: str, why: str = "") -> HFExportError:
    message = f"layer {index} ({_name(layer)}): {_FEATURE[layer.mixer]} has no equivalent in {cls}"
    return HFExportError(message + (f" ({why})" if why else ""))


def _common(family: Family) -> dict[str, Any]:
    return {
        "model_type": family.name,
        "architectures": [family.causal_lm],
        # Ours define no special tokens; a pad id would also zero and freeze one embedding row.
        "pad_token_id": None,
        "bos_token_id": None,
        "eos_token_id": None,
    }


def _fields(arch: ArchConfig, family: Family) -> dict[str, Any]:
    """The family's keys for our fields (`family.links`, where the layers use their kinds),
    its fixed keys, and its needs checked; HFExportError naming every field that differs."""
    problems = []
    relevant = set(arch.relevant_fields())
    for name, (value, why) in family.needs.items():
        if name in relevant and getattr(arch, name) != value:
            problems.append(f"{name}={getattr(arch, name)!r}: {why} ({name}={value!r})")
    config: dict[str, Any] = {}
    for link in family.links:
        if not link.exported or link.kinds and not link.kinds & arch.kinds:
            continue
        values = {getattr(arch, name) for name in link.ours}
        if len(values) > 1:
            problems.append(f"{' and '.join(f'{n}={getattr(arch, n)!r}' for n in link.ours)} "
                            f"differ: {family.config_class}'s {link.hf} sets them all")
            continue
        try:
            config[link.hf] = link.value_of(arch)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise HFExportError(f"{family.config_class}: " + "; ".join(problems))
    return config | family.fixed


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
    config = placed | {"num_hidden_layers": depth}
    if MOE not in arch.kinds:  # Jamba's own way of saying "no MoE": one expert, a plain MLP
        config |= {"num_experts": 1, "num_experts_per_tok": 1}
    return config


def _nemotron_h(arch: ArchConfig) -> dict[str, Any]:
    cls = "NemotronHConfig"
    mixer_char = {MAMBA2: "M", ATTENTION: "*"}
    ffn_char = {MLP: "-", NO_FFN: ""}
    chars = []
    for i, layer in enumerate(arch.layers):
        if layer.mixer not in mixer_char:
            why = "its M layers are Mamba-2" if layer.mixer == MAMBA else ""
            raise _no_equivalent(i, layer, cls, why)
        if layer.ffn == MOE:
            raise HFExportError(f"layer {i} ({_name(layer, True)}): an MoE has no equivalent in "
                                f"{cls} (its MoE adds an always-on shared expert and a routing "
                                "bias)")
        chars.append(mixer_char[layer.mixer] + ffn_char[layer.ffn])
    pattern = "".join(chars)
    # The legacy key (still read by 5.x) works in every release that has NemotronH.
    return {"hybrid_override_pattern": pattern, "num_hidden_layers": len(pattern)}


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
    return {"layers_block_type": block_types, "num_hidden_layers": len(block_types),
            "num_mem_blocks": n_blocks}


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
    config = {"num_hidden_layers": arch.depth, "block_types": cycle}
    if windows:
        config["attention_window_size"] = windows[0]
    return config


def _uniform(family: str, mixers: tuple[str, ...], ffn: str) -> Callable[[ArchConfig], dict]:
    """A family whose every layer is one of `mixers` with `ffn`; a local window (Mistral's
    sliding_window) is one for the whole model."""
    cls = FAMILIES[family].config_class

    def build(arch: ArchConfig) -> dict[str, Any]:
        for i, layer in enumerate(arch.layers):
            if layer.mixer not in mixers:
                raise _no_equivalent(i, layer, cls)
            if layer.ffn != ffn:
                wanted = {NO_FFN: "no FFN", MLP: "an MLP", MOE: "an MoE"}[ffn]
                raise HFExportError(f"layer {i} ({_name(layer, True)}): {cls} has {wanted} on "
                                    "every layer")
        config: dict[str, Any] = {"num_hidden_layers": arch.depth}
        if LOCAL_ATTENTION in mixers:
            kinds = {layer.token(default_ffn=layer.ffn) for layer in arch.layers}
            if len(kinds) > 1:
                raise HFExportError(f"layers {', '.join(sorted(kinds))} differ: {cls} has one "
                                    "sliding_window (or none) for every layer")
            first = arch.layers[0]
            config["sliding_window"] = first.arg if first.mixer == LOCAL_ATTENTION else None
        if MOE == ffn:
            _check_moe(arch, cls)
        return config

    return build


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


def _read_with_importer(family: str) -> Callable[[Any], list[str]]:
    """Read back through the importer's reader of the built config's own dict (the families
    whose layer keys the config class stores as given)."""
    def read(config: Any) -> list[str]:
        problems: list[str] = []
        layers = READERS[family](config.to_dict(), problems)
        return [f"{layer.mixer}+{layer.ffn}" for layer in layers] + problems
    return read


@dataclass(frozen=True)
class _Spec:
    family: Family
    build: Callable[[ArchConfig], dict[str, Any]]
    read_back: Callable[[Any], list[str]]

    @property
    def config_class(self) -> str:
        return self.family.config_class


def _make_spec(name: str, build: Callable[[ArchConfig], dict[str, Any]],
               read_back: Callable[[Any], list[str]] | None = None) -> _Spec:
    return _Spec(FAMILIES[name], build, read_back or _read_with_importer(name))


_SPECS = {
    "jamba": _make_spec("jamba", _jamba, _read_jamba),
    "nemotron_h": _make_spec("nemotron_h", _nemotron_h, _read_nemotron_h),
    "zamba2": _make_spec("zamba2", _zamba2, _read_zamba2),
    "recurrent_gemma": _make_spec("recurrent_gemma", _recurrent_gemma, _read_recurrent_gemma),
    "mamba": _make_spec("mamba", _uniform("mamba", (MAMBA,), NO_FFN)),
    "mamba2": _make_spec("mamba2", _uniform("mamba2", (MAMBA2,), NO_FFN)),
    "llama": _make_spec("llama", _uniform("llama", (ATTENTION,), MLP)),
    "mistral": _make_spec("mistral", _uniform("mistral", (ATTENTION, LOCAL_ATTENTION), MLP)),
    "mixtral": _make_spec("mixtral", _uniform("mixtral", (ATTENTION, LOCAL_ATTENTION), MOE)),
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
    spec = _spec(family)
    layers = spec.build(arch)  # the layer sequence first: its refusals name the layer
    return _common(spec.family) | layers | _fields(arch, spec.family)


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
        import transformers  # optional (hybrid-nas[hf]); seconds to import
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
