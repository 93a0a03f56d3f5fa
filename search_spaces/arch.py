"""ArchConfig: a frozen, serialisable description of one concrete hybrid architecture.

The config *is* the architecture: `layers` is the explicit layer stack (the pattern DSL compiles
down to it) and the remaining fields are every width the mixers need. Widths that are derived by
default (`d_ff`, `n_kv_heads`, `dt_rank`, `lru_width`) are resolved when the config is built, so
the stored value is the one the model uses. Note that `dataclasses.replace(arch, d_model=...)`
keeps those resolved widths; build a new config with `from_pattern` to re-derive them.

Widths, exactly as `trials` builds them and `cost` counts them:

    attention (A, L)     head_dim = d_model / n_heads; q: d -> n_heads*head_dim,
                         k, v: d -> n_kv_heads*head_dim, o: n_heads*head_dim -> d; biases on
                         q, k, v if attn_qkv_bias, on o if attn_out_bias; rotary embeddings on
                         the first rope_fraction of each head's channels (0: none)
    shared block (S)     the same attention fed concat(h, embedding), so head_dim = 2*d_model/n_heads
                         and o: n_heads*head_dim -> d, then an RMSNorm + the MLP below; the
                         block norms concat(h, embedding) itself, so the layer has no pre-norm;
                         with shared_lora_rank r > 0 every S layer adds its own adapter
                         d -> r -> (gate and up) to the shared MLP's pre-activations (Zamba2),
                         and with shared_lora_attention three more 2d -> r -> 2d on q, k, v
    Mamba (M)            d_inner = expand*d_model, dt_rank = ceil(d_model/16) unless given;
                         RMSNorms on dt, B and C (Jamba) if mamba_inner_norms
    Mamba-2 (M2)         d_inner = expand*d_model, heads = d_inner/m2_head_dim, m2_n_groups B/C groups
    RG-LRU (R)           recurrence width lru_width (= d_model unless given), gates block-diagonal
                         with n_heads blocks, temporal conv of width d_conv
    Hyena (H)            order hyena_order, implicit filter MLP of width hyena_filter_dim over
                         hyena_pos_dim positional features, short conv of width hyena_short_conv
    MLP                  hidden d_ff = 8/3*d_model rounded up to a multiple of 8 unless given;
                         gated (down(act(gate x) * up x)) if ffn_gated, else down(act(up x));
                         act = ffn_act (one of ACTIVATIONS); biases on every linear if ffn_bias
    MoE                  moe_experts such MLPs of hidden d_ff, top-moe_top_k softmax router; the
                         k weights renormalised to sum to 1 (Mixtral) unless moe_renormalize
                         is false (Jamba)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, ClassVar

from search_spaces.errors import UserError
from search_spaces.layers import (
    ACTIVATIONS,
    ATTENTION_MIXERS,
    FFN_KIND,
    FFNS,
    MAMBA2,
    MIXER_KIND,
    MIXERS,
    MLP,
    MOE,
    RGLRU,
    SHARED,
    Layer,
)

SCHEMA_VERSION = 1
DEFAULT_WINDOW = 64
#: Dims that only fill in what a pattern leaves unwritten; they are not fields of ArchConfig.
PATTERN_DIMS = ("window", "ffn")


class ArchConfigError(UserError):
    """An ArchConfig that cannot describe a real model; the message names the field and value,
    and `field` is that field where one field alone is at fault (an importer maps it back to
    the key it read the value from)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def default_d_ff(d_model: int) -> int:
    """SwiGLU hidden width that keeps an MLP near 8*d^2 parameters, as in LLaMA."""
    return _round_up(8 * d_model / 3, 8)


def default_dt_rank(d_model: int) -> int:
    """Mamba's rank of the Δ projection."""
    return math.ceil(d_model / 16)


@dataclass(frozen=True)
class ArchConfig:
    layers: tuple[Layer, ...]
    vocab_size: int = 256
    d_model: int = 128
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    # attention (A, L, S) and the RG-LRU's gate blocks
    n_heads: int = 4
    n_kv_heads: int | None = None
    rope_theta: float = 10000.0
    rope_fraction: float = 1.0
    attn_qkv_bias: bool = False
    attn_out_bias: bool = False
    # feed-forward (MLP, MoE experts, the shared block's MLP)
    d_ff: int | None = None
    ffn_act: str = "silu"
    ffn_gated: bool = True
    ffn_bias: bool = False
    moe_experts: int = 8
    moe_top_k: int = 2
    moe_renormalize: bool = True
    # the shared block (S): each invocation's own low-rank adapters on its MLP and, with
    # shared_lora_attention, on its q, k, v (Zamba2)
    shared_lora_rank: int = 0
    shared_lora_attention: bool = False
    # Mamba-1 (d_conv and expand are shared with Mamba-2; d_conv with the RG-LRU block)
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None
    mamba_inner_norms: bool = False
    # Mamba-2
    m2_d_state: int = 64
    m2_head_dim: int = 32
    m2_n_groups: int = 1
    # RG-LRU
    lru_width: int | None = None
    # Hyena
    hyena_order: int = 2
    hyena_filter_dim: int = 64
    hyena_pos_dim: int = 5
    hyena_short_conv: int = 3

    # Which fields matter for which layer kinds: decides conditional search parameters and
    # which fields the canonical form (and so the fingerprint) keeps.
    # which fields the canonical form (and so the fingerprint) keeps; read from the kind records.
    ALWAYS: ClassVar[tuple[str, ...]] = ("vocab_size", "d_model", "tie_embeddings", "norm_eps")
    RELEVANT: ClassVar[dict[str, tuple[str, ...]]] = {
        **{symbol: kind.fields for symbol, kind in MIXER_KIND.items()},
        **{name: kind.fields for name, kind in FFN_KIND.items()},
    }
    BOOL_FIELDS: ClassVar[tuple[str, ...]] = ("tie_embeddings", "attn_qkv_bias", "attn_out_bias",
                                              "ffn_gated", "ffn_bias", "mamba_inner_norms",
                                              "shared_lora_attention", "moe_renormalize")

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers:
            raise ArchConfigError("layers: an architecture needs at least one layer")
        for index, layer in enumerate(layers):
            _check_layer(index, layer)
        for name in ("vocab_size", "d_model", "n_heads", "moe_experts", "moe_top_k", "d_state",
                     "d_conv", "expand", "m2_d_state", "m2_head_dim", "m2_n_groups",
                     "hyena_filter_dim", "hyena_short_conv"):
            _check_positive_int(name, getattr(self, name))
        if isinstance(self.shared_lora_rank, bool) or not isinstance(self.shared_lora_rank, int) \
                or self.shared_lora_rank < 0:
            raise ArchConfigError(f"shared_lora_rank={self.shared_lora_rank!r} must be an "
                                  "integer >= 0 (0: no adapters)", "shared_lora_rank")
        self._resolve("n_kv_heads", self.n_heads)
        self._resolve("d_ff", default_d_ff(self.d_model))
        self._resolve("dt_rank", default_dt_rank(self.d_model))
        self._resolve("lru_width", self.d_model)
        self._check_widths()

    def _resolve(self, name: str, default: int) -> None:
        value = getattr(self, name)
        if value is None:
            object.__setattr__(self, name, default)
        else:
            _check_positive_int(name, value)

    def _check_widths(self) -> None:
        if not isinstance(self.hyena_order, int) or self.hyena_order < 2:
            raise ArchConfigError(f"hyena_order={self.hyena_order!r} must be an integer >= 2")
        if not isinstance(self.hyena_pos_dim, int) or self.hyena_pos_dim < 3 \
                or self.hyena_pos_dim % 2 == 0:
            raise ArchConfigError(f"hyena_pos_dim={self.hyena_pos_dim!r} must be odd and >= 3 "
                                  "(the position plus sine/cosine pairs)")
        for name in ("norm_eps", "rope_theta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ArchConfigError(f"{name}={value!r} must be a positive number", name)
        for name in self.BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ArchConfigError(f"{name}={getattr(self, name)!r} must be true or false",
                                      name)
        if self.ffn_act not in ACTIVATIONS:
            raise ArchConfigError(f"ffn_act={self.ffn_act!r} must be one of "
                                  f"{', '.join(ACTIVATIONS)}", "ffn_act")
        fraction = self.rope_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not 0 <= fraction <= 1:
            raise ArchConfigError(f"rope_fraction={fraction!r} must be a number from 0 to 1",
                                  "rope_fraction")
        kinds = self.kinds
        if kinds & {*ATTENTION_MIXERS, RGLRU}:
            _divides("n_heads", self.n_heads, "d_model", self.d_model)
        if kinds & set(ATTENTION_MIXERS):
            _divides("n_kv_heads", self.n_kv_heads, "n_heads", self.n_heads)
            head_dims = {self.d_model // self.n_heads} | (
                {2 * self.d_model // self.n_heads} if SHARED in kinds else set())
            for head_dim in sorted(head_dims):
                if rotary_dim(head_dim, fraction) % 2:
                    raise ArchConfigError(
                        f"rope_fraction={fraction} of head dimension {head_dim} is "
                        f"{fraction * head_dim:g} channels: rotary embeddings need an even "
                        "whole number of them")
        if SHARED in kinds and self.shared_lora_attention and self.shared_lora_rank \
                and self.n_kv_heads != self.n_heads:
            raise ArchConfigError(
                f"shared_lora_attention with n_kv_heads={self.n_kv_heads} != n_heads="
                f"{self.n_heads}: the k and v adapters write 2*d_model channels, as q does")
        if MOE in kinds and self.moe_top_k > self.moe_experts:
            raise ArchConfigError(
                f"moe_top_k={self.moe_top_k} must be at most moe_experts={self.moe_experts}")
        if MAMBA2 in kinds:
            d_inner = self.expand * self.d_model
            _divides("m2_head_dim", self.m2_head_dim, "expand*d_model", d_inner)
            _divides("m2_n_groups", self.m2_n_groups, "the Mamba-2 head count",
                     d_inner // self.m2_head_dim)
        if RGLRU in kinds:
            _divides("n_heads", self.n_heads, "lru_width", self.lru_width)

    # -- what the layer stack contains --------------------------------------------------------

    @cached_property
    def kinds(self) -> frozenset[str]:
        """Every mixer kind and FFN kind used by at least one layer."""
        return frozenset(layer.mixer for layer in self.layers) | frozenset(
            layer.ffn for layer in self.layers)

    @property
    def depth(self) -> int:
        return len(self.layers)

    def relevant_fields(self) -> tuple[str, ...]:
        return relevant_fields(self.kinds)

    # -- names and identity --------------------------------------------------------------------

    @cached_property
    def pattern(self) -> str:
        """The canonical pattern string: runs folded as X*N, mlp left unwritten (the parser's
        default), another FFN kind shared by most layers written once as a group suffix
        (`(M*6 S)+none*13`). It means this layer stack on its own:
        `from_pattern(arch.pattern, **widths).layers == arch.layers`."""
        from search_spaces.pattern import format_layers

        return format_layers(self.layers)

    def canonical(self) -> "ArchConfig":
        """The same architecture with every field that no layer uses reset to its default."""
        keep = set(self.relevant_fields())
        defaults = {f.name: f.default for f in fields(self) if f.name != "layers"}
        changes = {name: value for name, value in defaults.items() if name not in keep}
        return _rebuild(self, changes)

    def fingerprint(self) -> str:
        """Equal for equal architectures, however they were written."""
        payload = json.dumps(self.canonical().to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    # -- construction and serialisation --------------------------------------------------------

    @classmethod
    def from_pattern(cls, text: str, *, window: int = DEFAULT_WINDOW, ffn: str = MLP,
                     **dims: Any) -> "ArchConfig":
        """Build from a concrete pattern. A bare `L` takes `window` (default 64); a layer
        without a suffix takes `ffn` (default mlp); every other dim is a field of this class
        and defaults as documented there. Raises PatternError or ArchConfigError."""
        from search_spaces.pattern import PatternError, concrete_layers, parse

        unknown = sorted(set(dims) - set(field_names()))
        if unknown:
            raise ArchConfigError(f"unknown dim {unknown[0]!r}; valid dims: "
                                  f"{', '.join(PATTERN_DIMS + field_names())}")
        if ffn not in FFNS:
            raise ArchConfigError(f"ffn={ffn!r} must be one of {', '.join(FFNS)}")
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ArchConfigError(f"window={window!r} must be a positive integer")
        tree = parse(text)
        try:
            layers = concrete_layers(tree, window=window, ffn=ffn)
        except PatternError as error:  # expansion knows the column, not the text
            raise PatternError(error.message, error.col, text) from None
        return cls(layers=layers, **dims)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (pattern string plus every field) that `from_dict` rebuilds exactly."""
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "pattern": self.pattern}
        for f in fields(self):
            if f.name != "layers":
                data[f.name] = getattr(self, f.name)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArchConfig":
        data = dict(data)
        version = data.pop("schema_version", None)
        if version is None:
            raise ArchConfigError("schema_version: missing (expected 1)")
        if version != SCHEMA_VERSION:
            raise ArchConfigError(f"schema_version: {version!r} is not one this toolkit reads "
                                  f"(it writes and reads {SCHEMA_VERSION})")
        pattern = data.pop("pattern", None)
        if not isinstance(pattern, str):
            raise ArchConfigError("pattern: missing or not a string")
        return cls.from_pattern(pattern, **data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "ArchConfig":
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "ArchConfig":
        from search_spaces.yaml_input import load_yaml

        data = load_yaml(text, "ArchConfig YAML", ArchConfigError)
        if not isinstance(data, dict):
            raise ArchConfigError("an ArchConfig YAML document must be a mapping")
        return cls.from_dict(data)


def rotary_dim(head_dim: int, fraction: float) -> int:
    """Channels of a head that rotary embeddings rotate (an odd or fractional count is refused
    by ArchConfig); 0 when fraction is 0."""
    exact = head_dim * fraction
    return int(exact) if float(exact).is_integer() else -1


def field_names() -> tuple[str, ...]:
    return tuple(f.name for f in fields(ArchConfig) if f.name != "layers")


def relevant_fields(kinds: frozenset[str] | set[str]) -> tuple[str, ...]:
    """The ArchConfig fields that describe an architecture using these layer kinds."""
    wanted = set(ArchConfig.ALWAYS)
    for kind in kinds:
        wanted.update(ArchConfig.RELEVANT[kind])
    return tuple(name for name in field_names() if name in wanted)


def _rebuild(arch: ArchConfig, changes: dict[str, Any]) -> ArchConfig:
    values = {f.name: getattr(arch, f.name) for f in fields(arch)}
    values.update(changes)
    # Derived widths that were reset to None are derived again from the kept fields.
    return ArchConfig(**values)


def _check_layer(index: int, layer: Layer) -> None:
    where = f"layers[{index}]"
    if layer.mixer not in MIXERS:
        raise ArchConfigError(f"{where}: unknown mixer {layer.mixer!r} (valid: {', '.join(MIXERS)})")
    if layer.ffn not in FFNS:
        raise ArchConfigError(f"{where}: unknown ffn {layer.ffn!r} (valid: {', '.join(FFNS)})")
    kind = MIXER_KIND[layer.mixer]
    if kind.arg is not None:
        if not isinstance(layer.arg, int) or isinstance(layer.arg, bool) \
                or layer.arg < kind.arg_min:
            raise ArchConfigError(f"{where}: {kind.name} {kind.arg} {layer.arg!r} must be "
                                  f">= {kind.arg_min}")
    elif layer.arg is not None:
        raise ArchConfigError(f"{where}: mixer {layer.mixer} takes no argument, got {layer.arg!r}")


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ArchConfigError(f"{name}={value!r} must be a positive integer", name)


def _divides(name: str, value: int, of_name: str, of_value: int) -> None:
    if of_value % value:
        raise ArchConfigError(f"{name}={value} must divide {of_name}={of_value}")

