"""The vocabulary of layer kinds: one record per mixer kind and per FFN kind.

A kind is one `MixerKind` or `FFNKind` entry here. The parser reads its symbol and argument,
ArchConfig reads which fields it uses (and so what the canonical form keeps and which dims a
search space samples), the space counter and the attention-ratio constraint read its flags, and
the cost model (`search_spaces.cost.MIXER_COSTS`/`FFN_COSTS`), the builder (`trials.builder`)
and the exporters key their per-kind functions by the same symbol; a conformance test holds
every such table to exactly these kinds. Adding a kind starts with one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

# Fields every attention-like mixer reads (heads, positions, biases).
_ATTENTION_FIELDS = ("n_heads", "n_kv_heads", "rope_theta", "rope_fraction", "attn_qkv_bias",
                     "attn_out_bias")
# Fields of one MLP: the FFN kinds and the shared block's MLP read them.
MLP_FIELDS = ("d_ff", "ffn_act", "ffn_gated", "ffn_bias")


@dataclass(frozen=True)
class MixerKind:
    """A mixer as the whole toolkit sees it.

    symbol      how a pattern writes it (`A`, `M2`)
    name        how messages name it
    arg         what its integer argument means (`L128`: the window), or None
    arg_min     the smallest argument
    fields      the ArchConfig fields its module reads
    attention   counts as attention (attention-ratio constraint, KV cache column)
    pre_norm    the residual layer puts an RMSNorm before it (the shared block norms its own
                input, concat(h, embedding), instead)
    """

    symbol: str
    name: str
    fields: tuple[str, ...]
    arg: str | None = None
    arg_min: int = 1
    attention: bool = False
    pre_norm: bool = True


@dataclass(frozen=True)
class FFNKind:
    """A feed-forward kind, written as a suffix (`M+moe`); `fields` as for MixerKind."""

    name: str
    description: str
    fields: tuple[str, ...]


MIXER_KINDS: tuple[MixerKind, ...] = (
    MixerKind("A", "attention", _ATTENTION_FIELDS, attention=True),
    MixerKind("L", "local attention", _ATTENTION_FIELDS, arg="window", attention=True),
    MixerKind("M", "Mamba", ("d_state", "d_conv", "expand", "dt_rank", "mamba_inner_norms")),
    MixerKind("M2", "Mamba-2", ("m2_d_state", "m2_head_dim", "m2_n_groups", "d_conv", "expand")),
    MixerKind("R", "RG-LRU", ("lru_width", "d_conv", "n_heads")),
    MixerKind("H", "Hyena", ("hyena_order", "hyena_filter_dim", "hyena_pos_dim",
                             "hyena_short_conv")),
    MixerKind("S", "shared attention block",
              _ATTENTION_FIELDS + MLP_FIELDS + ("shared_lora_rank", "shared_lora_attention"),
              arg="id", arg_min=0,
              attention=True, pre_norm=False),
)
FFN_KINDS: tuple[FFNKind, ...] = (
    FFNKind("mlp", "MLP (gated or not, per ffn_act/ffn_gated/ffn_bias)", MLP_FIELDS),
    FFNKind("moe", "mixture of moe_experts MLPs, top-moe_top_k routed",
            MLP_FIELDS + ("moe_experts", "moe_top_k", "moe_renormalize")),
    FFNKind("none", "no feed-forward part", ()),
)
MIXER_KIND: dict[str, MixerKind] = {kind.symbol: kind for kind in MIXER_KINDS}
FFN_KIND: dict[str, FFNKind] = {kind.name: kind for kind in FFN_KINDS}

# The symbols, for code that names one kind.
ATTENTION, LOCAL_ATTENTION, MAMBA, MAMBA2, RGLRU, HYENA, SHARED = (k.symbol for k in MIXER_KINDS)
MLP, MOE, NO_FFN = (k.name for k in FFN_KINDS)

MIXERS: tuple[str, ...] = tuple(MIXER_KIND)
FFNS: tuple[str, ...] = tuple(FFN_KIND)
MIXER_NAMES: dict[str, str] = {kind.symbol: kind.name for kind in MIXER_KINDS}
#: Mixers that take an integer argument in the pattern (`L128`, `S1`).
MIXERS_WITH_ARG = tuple(kind.symbol for kind in MIXER_KINDS if kind.arg)
#: Mixers that count as attention for the attention-ratio constraint.
ATTENTION_MIXERS = tuple(kind.symbol for kind in MIXER_KINDS if kind.attention)

#: MLP activations (`ffn_act`): the function applied to the hidden layer (to the gate branch
#: when gated). relu2 is relu(x)^2 (Primer, Nemotron-H); gelu_tanh is GeLU's tanh approximation.
ACTIVATIONS: tuple[str, ...] = ("silu", "gelu", "gelu_tanh", "relu", "relu2")


@dataclass(frozen=True)
class Layer:
    """One residual layer of a concrete architecture: a mixer, then a feed-forward part.

    `arg` is the window of a local attention layer or the id of a shared block, and None for
    every other mixer. In an ArchConfig both `arg` (where the mixer has one) and `ffn` are
    always resolved; only the parser's tokens leave them open (None) for the dims to fill in.
    """

    mixer: str
    arg: int | None = None
    ffn: str | None = None

    def token(self, default_ffn: str | None = None, default_shared_id: int = 0) -> str:
        """The layer as written in a pattern, leaving out what equals the defaults."""
        text = self.mixer
        if self.arg is not None and not (self.mixer == SHARED and self.arg == default_shared_id):
            text += str(self.arg)
        if self.ffn is not None and self.ffn != default_ffn:
            text += "+" + self.ffn
        return text
