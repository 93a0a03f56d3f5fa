"""Importing a Hugging Face config (config.json) as an ArchConfig: `from_hf(config)`.

    arch = from_hf(json.load(open("config.json")))     # or a transformers config object
    arch.pattern                                        # '(M A+moe M M+moe M M+moe M M+moe)*4'...

The family comes from `model_type`; the keys are read through `search_spaces.hf_families`
(one record per family) and each family's layer sequence through its reader below. Every key of
the config is accounted for: a key that is a width becomes that field, a key the family fixes
must have its one value, a key that does not touch the architecture (initialisation, kernels,
token ids) is passed over, and anything else is refused. All problems are collected and raised
together as one HFConfigError, so a user sees every field that stops the import at once.
Pure Python: a transformers config object is read through its `to_dict()`.
"""

from __future__ import annotations

from typing import Any, Callable

from search_spaces.arch import ArchConfig, ArchConfigError
from search_spaces.hf_families import FAMILIES, Family, HFConfigError, Link, integer, rope_value
from search_spaces.layers import (
    ATTENTION,
    LOCAL_ATTENTION,
    MAMBA,
    MAMBA2,
    MLP,
    MOE,
    NO_FFN,
    RGLRU,
    SHARED,
    Layer,
)

_ROPE_KEYS = ("rope_theta", "partial_rotary_factor")

Problems = list[str]


def _as_dict(config: Any) -> dict[str, Any]:
    if isinstance(config, dict):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    raise HFConfigError(f"expected a config dict or a transformers config, not "
                        f"{type(config).__name__}")


def _count(data: dict[str, Any], key: str, problems: Problems, default: int | None = None,
           minimum: int = 1) -> int:
    """The integer `key` (the config class's `default` when absent); a problem and `minimum`
    when it is not an integer >= minimum."""
    value = data.get(key, default)
    if value is None and key not in data:
        problems.append(f"{key}: missing")
        return minimum
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        problems.append(f"{key}={value!r}: expected an integer >= {minimum}")
        return minimum
    return value


def _list(data: dict[str, Any], key: str, problems: Problems,
          item: Callable[[Any], bool] = lambda entry: isinstance(entry, str),
          what: str = "strings") -> list[Any]:
    """The JSON array `key` ([] when absent or null); a problem and [] when it is something
    else or holds an entry that `item` refuses."""
    value = data.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(item(entry) for entry in value):
        problems.append(f"{key}={value!r}: expected a list of {what}")
        return []
    return value


# -- one layer reader per family --------------------------------------------------------------


def _jamba(data: dict[str, Any], problems: Problems) -> list[Layer]:
    depth = _count(data, "num_hidden_layers", problems)
    periods = {prefix: (_count(data, f"{prefix}_layer_period", problems, period),
                        _count(data, f"{prefix}_layer_offset", problems, offset, minimum=0))
               for prefix, period, offset in (("attn", 8, 4), ("expert", 2, 1))}
    experts = _count(data, "num_experts", problems, 16)
    layers = []
    for i in range(depth):
        attention = i % periods["attn"][0] == periods["attn"][1]
        moe = experts > 1 and i % periods["expert"][0] == periods["expert"][1]
        layers.append(Layer(ATTENTION if attention else MAMBA, None, MOE if moe else MLP))
    return layers


_NEMOTRON_ENTRIES = {"M": MAMBA2, "linear_attention": MAMBA2, "mamba": MAMBA2,
                     "*": ATTENTION, "full_attention": ATTENTION, "attention": ATTENTION,
                     "-": MLP, "mlp": MLP, "E": MOE, "moe": MOE}


def _nemotron_h(data: dict[str, Any], problems: Problems) -> list[Layer]:
    key = "layers_block_type" if data.get("layers_block_type") else "hybrid_override_pattern"
    pattern = data.get(key)
    entries = list(pattern) if isinstance(pattern, str) else _list(data, key, problems)
    if not entries and not pattern:
        problems.append("hybrid_override_pattern: missing (and no layers_block_type)")
    count = data.get("num_hidden_layers")
    if entries and count is not None and count != len(entries):
        # NemotronH builds one block per entry; a count that disagrees is a damaged file
        problems.append(f"num_hidden_layers={count!r}: {key} has {len(entries)} entries, one "
                        "per block")
    layers: list[Layer] = []
    for i, entry in enumerate(entries):
        kind = _NEMOTRON_ENTRIES.get(entry)
        if kind is None:
            problems.append(f"{key}[{i}]={entry!r}: not a layer kind of ours")
        elif kind == MOE:
            problems.append(f"{key}[{i}]={entry!r}: NemotronH's MoE adds an always-on shared "
                            "expert and sigmoid routing with a score-correction bias; ours has "
                            "neither")
        elif kind == MLP:
            if not layers or layers[-1].ffn != NO_FFN:
                problems.append(f"{key}[{i}]={entry!r}: a feed-forward entry that does not "
                                "follow a mixer entry (ours put one FFN after each mixer)")
            else:
                layers[-1] = Layer(layers[-1].mixer, None, MLP)
        else:
            layers.append(Layer(kind, None, NO_FFN))
    return layers


def _zamba2(data: dict[str, Any], problems: Problems) -> list[Layer]:
    types = _list(data, "layers_block_type", problems)
    if not types:
        depth = _count(data, "num_hidden_layers", problems)
        hybrid = set(_list(data, "hybrid_layer_ids", problems,
                           lambda entry: type(entry) is int and entry >= 0, "layer indices"))
        types = ["hybrid" if i in hybrid else "linear_attention" for i in range(depth)]
    blocks = _count(data, "num_mem_blocks", problems, 1)
    layers: list[Layer] = []
    calls = 0
    for i, kind in enumerate(types):
        if kind == "hybrid":
            layers.append(Layer(SHARED, calls % blocks, NO_FFN))
            calls += 1
        elif kind not in ("linear_attention", "mamba", "mamba2"):
            problems.append(f"layers_block_type[{i}]={kind!r}: not a Zamba2 layer kind")
            continue
        layers.append(Layer(MAMBA2, None, NO_FFN))
    return layers


def _recurrent_gemma(data: dict[str, Any], problems: Problems) -> list[Layer]:
    depth = _count(data, "num_hidden_layers", problems)
    cycle = _list(data, "block_types", problems) or ["recurrent", "recurrent", "attention"]
    window = _count(data, "attention_window_size", problems, 2048)
    layers = []
    for i in range(depth):
        kind = cycle[i % len(cycle)]
        if kind == "recurrent":
            layers.append(Layer(RGLRU, None, MLP))
        elif kind == "attention":
            layers.append(Layer(LOCAL_ATTENTION, window, MLP))
        else:
            problems.append(f"block_types[{i % len(cycle)}]={kind!r}: not a RecurrentGemma "
                            "block type")
    return layers


def _uniform(mixer: str, ffn: str) -> Callable[[dict[str, Any], Problems], list[Layer]]:
    def read(data: dict[str, Any], problems: Problems) -> list[Layer]:
        return [Layer(mixer, None, ffn)] * _count(data, "num_hidden_layers", problems)
    return read


def _windowed(ffn: str) -> Callable[[dict[str, Any], Problems], list[Layer]]:
    """Mistral and Mixtral: every layer attends within `sliding_window` (None: globally)."""
    def read(data: dict[str, Any], problems: Problems) -> list[Layer]:
        window = data.get("sliding_window")
        if window is not None and not integer(window):
            problems.append(f"sliding_window={window!r}: expected a positive integer or null")
            window = None
        layer = Layer(ATTENTION, None, ffn) if window is None \
            else Layer(LOCAL_ATTENTION, window, ffn)
        return [layer] * _count(data, "num_hidden_layers", problems)
    return read


READERS: dict[str, Callable[[dict[str, Any], Problems], list[Layer]]] = {
    "jamba": _jamba,
    "nemotron_h": _nemotron_h,
    "zamba2": _zamba2,
    "recurrent_gemma": _recurrent_gemma,
    "mamba": _uniform(MAMBA, NO_FFN),
    "mamba2": _uniform(MAMBA2, NO_FFN),
    "llama": _uniform(ATTENTION, MLP),
    "mistral": _windowed(MLP),
    "mixtral": _windowed(MOE),
}


# -- the fields -------------------------------------------------------------------------------


def _read_link(link: Link, data: dict[str, Any], dims: dict[str, Any], problems: Problems) -> None:
    default = link.default(data) if callable(link.default) else link.default
    if link.hf in _ROPE_KEYS:
        value = rope_value(data, link.hf, default)
        present = value is not None
    else:
        present = link.hf in data
        value = data.get(link.hf, default)
    if not present and (not link.ours or default is None):
        if link.ours:  # a key that only checks (head_dim) may be left out
            problems.append(f"{link.hf}: missing")
        return
    try:
        decoded = link.decode(value, data)
    except (ValueError, TypeError, ZeroDivisionError) as error:
        problems.append(f"{link.hf}={value!r}: {error}")
        return
    for name in link.ours:
        dims[name] = decoded


def _rope_problems(data: dict[str, Any]) -> Problems:
    problems = []
    if not isinstance(data.get("rope_parameters") or {}, dict):
        return [f"rope_parameters={data['rope_parameters']!r}: expected a mapping"]
    if data.get("rope_scaling"):
        problems.append(f"rope_scaling={data['rope_scaling']!r}: ours rotates with plain RoPE "
                        "(no scaling)")
    parameters = data.get("rope_parameters") or {}
    if parameters.get("rope_type", "default") != "default":
        problems.append(f"rope_parameters.rope_type={parameters['rope_type']!r}: ours rotates "
                        "with plain RoPE")
    extra = sorted(set(parameters) - {"rope_type", *_ROPE_KEYS})
    if extra:
        problems.append(f"rope_parameters.{extra[0]}: not a field of ours")
    return problems


def family_of(data: dict[str, Any]) -> Family:
    model_type = data.get("model_type")
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise HFConfigError(f"model_type={model_type!r}: not a family this toolkit imports "
                            f"(valid: {', '.join(FAMILIES)})")
    return FAMILIES[model_type]


def from_hf(config: Any) -> ArchConfig:
    """The ArchConfig of a Hugging Face config (a config.json dict or a transformers config).

    Raises HFConfigError naming every field that ArchConfig cannot represent."""
    data = _as_dict(config)
    family = family_of(data)
    problems: Problems = [f"{key}={data[key]!r}: not a field this importer knows for "
                          f"{family.config_class}"
                          for key in sorted(set(data) - family.known_keys())]
    layers = READERS[family.name](data, problems)
    kinds = {layer.mixer for layer in layers} | {layer.ffn for layer in layers}
    dims: dict[str, Any] = {}
    for link in family.links:
        if not link.kinds or link.kinds & kinds:
            _read_link(link, data, dims, problems)
    for key, wanted in family.fixed.items():
        if key in data and data[key] != wanted:
            problems.append(f"{key}={data[key]!r}: ours needs {wanted!r}")
    for key in sorted(family.null_only):
        if data.get(key) is not None:
            problems.append(f"{key}={data[key]!r}: ours can represent only null here")
    problems += _rope_problems(data)
    for name, (value, why) in family.needs.items():
        if dims.setdefault(name, value) != value:
            key = _key_of(family, name)
            problems.append(f"{key}={data.get(key)!r}: {why}")
    if problems:
        raise HFConfigError(f"{family.config_class} cannot be represented: " + "; ".join(problems))
    try:
        return ArchConfig(layers=tuple(layers), **dims)
    except ArchConfigError as error:
        key = _key_of(family, error.field) if error.field else None
        where = f"{key}={data.get(key)!r}: " if key else ""
        raise HFConfigError(f"{family.config_class} cannot be represented: {where}{error}") \
            from None


def _key_of(family: Family, name: str) -> str | None:
    """The config key that `family` reads the ArchConfig field `name` from (None: none)."""
    return next((link.hf for link in family.links if name in link.ours), None)
