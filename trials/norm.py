"""RMSNorm, the only norm in the model (weight only, no bias)."""

from __future__ import annotations

import torch
from torch import nn

from trials.ops import add_rms_norm, rms_norm


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)  # fp32 statistics, a cheaper backward

    def add_forward(self, x: torch.Tensor,
                    delta: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x + delta, the norm of x + delta) in one op: a pre-norm residual add and this norm
        (delta None: (x, the norm of x))."""
        if delta is None:
            return x, self(x)
        return add_rms_norm(x, delta, self.weight, self.eps)
