"""The FFN registry. Every FFN returns (y, aux): aux is None, or MoE's load-balancing loss and
per-expert token counts."""

from __future__ import annotations

from trials.ffn.mlp import MLP, SwiGLU
from trials.ffn.moe import MoE, MoEAux
from trials.registry import Registry

FFNS = Registry("FFN", {"mlp": MLP, "moe": MoE})

__all__ = ["FFNS", "MLP", "MoE", "MoEAux", "SwiGLU"]
