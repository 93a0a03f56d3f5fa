"""The vocabulary of layer kinds: which mixers and FFNs exist and what each one needs.

Every other module (the parser, ArchConfig, the cost model, trials' registry) takes these names
from here, so adding a mixer starts in this file.
"""

from __future__ import annotations

from dataclasses import dataclass

# Mixer kinds, as written in a pattern.
ATTENTION = "A"  # global causal attention, GQA + RoPE
LOCAL_ATTENTION = "L"  # sliding-window causal attention; argument = window
MAMBA = "M"  # Mamba-1 selective SSM
MAMBA2 = "M2"  # Mamba-2 (SSD)
RGLRU = "R"  # Griffin recurrent block (RG-LRU)
HYENA = "H"  # Hyena operator
SHARED = "S"  # Zamba shared attention block; argument = block id

MIXERS: tuple[str, ...] = (ATTENTION, LOCAL_ATTENTION, MAMBA, MAMBA2, RGLRU, HYENA, SHARED)
MIXER_NAMES: dict[str, str] = {
    ATTENTION: "attention",
    LOCAL_ATTENTION: "local attention",
    MAMBA: "Mamba",
    MAMBA2: "Mamba-2",
    RGLRU: "RG-LRU",
    HYENA: "Hyena",
    SHARED: "shared attention block",
}
#: Mixers that take an integer argument in the pattern (`L128`, `S1`).
MIXERS_WITH_ARG = (LOCAL_ATTENTION, SHARED)
#: Mixers that count as attention for the attention-ratio constraint.
ATTENTION_MIXERS = (ATTENTION, LOCAL_ATTENTION, SHARED)

# Feed-forward kinds, written as a suffix (`M+moe`).
MLP = "mlp"
MOE = "moe"
NO_FFN = "none"
FFNS: tuple[str, ...] = (MLP, MOE, NO_FFN)


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
