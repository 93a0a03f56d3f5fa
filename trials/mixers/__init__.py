"""The mixer registry: one class per pattern letter, one file per mixer."""

from __future__ import annotations

from trials.mixers.attention import Attention
from trials.mixers.hyena import Hyena
from trials.mixers.local_attention import LocalAttention
from trials.mixers.mamba import Mamba
from trials.mixers.mamba2 import Mamba2
from trials.mixers.rglru import RecurrentBlock
from trials.mixers.shared_block import SharedAttentionBlock, SharedBlockInvocation
from trials.registry import Registry

MIXERS = Registry("mixer", {
    "A": Attention,
    "L": LocalAttention,
    "M": Mamba,
    "M2": Mamba2,
    "R": RecurrentBlock,
    "H": Hyena,
    "S": SharedBlockInvocation,
})

__all__ = ["MIXERS", "Attention", "Hyena", "LocalAttention", "Mamba", "Mamba2",
           "RecurrentBlock", "SharedAttentionBlock", "SharedBlockInvocation"]
