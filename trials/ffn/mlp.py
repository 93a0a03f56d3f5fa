"""SwiGLU feed-forward: y = down(silu(gate(x)) * up(x)), no biases.

Shape legend: d model width, F = d_ff hidden width; any leading dims.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class SwiGLU(nn.Module):
    """gate and up d -> F, down F -> d. Returns (y, None): FFNs return an aux output, and a
    dense MLP has none."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.gate = nn.Linear(d_model, d_ff, bias=False)
        self.up = nn.Linear(d_model, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d_model, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.gate, self.up, self.down):
            linear.reset_parameters()

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        return self.down(F.silu(self.gate(x)) * self.up(x)), None
