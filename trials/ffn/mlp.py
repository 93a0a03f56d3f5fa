"""SwiGLU feed-forward: y = down(silu(gate(x)) * up(x)), no biases.

Shape legend: d model width, F = d_ff hidden width; any leading dims.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from trials.ops._memory import blocks


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
        if x.dim() != 3:
            return self._mlp(x), None
        # Each position is its own: over segments of the sequence, the F-wide temporaries stay
        # within trials.ops._memory's budget (a larger freed block is page-faulted in afresh).
        batch, length, _ = x.shape
        ys = [self._mlp(x[:, start:end])
              for start, end in blocks(length, 4 * batch * self.gate.out_features)]
        return (ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)), None

    def _mlp(self, x: Tensor) -> Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))
