"""The MLP feed-forward, gated or not, with any of the toolkit's activations and optional biases.

    gated      y = down(act(gate(x)) * up(x))     (SwiGLU with act = silu, GeGLU with gelu)
    not gated  y = down(act(up(x)))               (Nemotron-H: act = relu2)

Shape legend: d model width, F = d_ff hidden width; any leading dims. The activations are
`search_spaces.layers.ACTIVATIONS`; `ACTIVATIONS` here maps each name to its function.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from trials.ops._memory import blocks
from trials.ops.elementwise import glu


def relu2(x: Tensor) -> Tensor:
    """relu(x)^2 (Primer; Nemotron-H's MLP)."""
    return F.relu(x).square()


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
    "relu2": relu2,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; valid: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """gate (if gated) and up d -> F, down F -> d, biases on all three if `bias`. Returns
    (y, None): FFNs return an aux output, and a dense MLP has none."""

    def __init__(self, d_model: int, d_ff: int, act: str = "silu", gated: bool = True,
                 bias: bool = False) -> None:
        super().__init__()
        self.act = activation(act)
        self.gate = nn.Linear(d_model, d_ff, bias=bias) if gated else None
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for linear in (self.gate, self.up, self.down):
            if linear is not None:
                linear.reset_parameters()

    def forward(self, x: Tensor, adapter: nn.Module | None = None) -> tuple[Tensor, None]:
        """`adapter` (Zamba2's per-call LoRA) maps x to g*F values added to the pre-activations
        of gate and up (the first F to gate), or of up alone when not gated."""
        if x.dim() != 3:
            return self._mlp(x, adapter), None
        # Each position is its own: over segments of the sequence, the F-wide temporaries stay
        # within trials.ops._memory's budget (a larger freed block is page-faulted in afresh).
        batch, length, _ = x.shape
        ys = [self._mlp(x[:, start:end], adapter)
              for start, end in blocks(length, 4 * batch * self.up.out_features)]
        return (ys[0] if len(ys) == 1 else torch.cat(ys, dim=1)), None

    def _mlp(self, x: Tensor, adapter: nn.Module | None = None) -> Tensor:
        up = self.up(x)
        gate = None if self.gate is None else self.gate(x)
        if adapter is not None:
            extra = adapter(x)
            if gate is None:
                up = up + extra
            else:
                extra_gate, extra_up = extra.chunk(2, dim=-1)
                gate, up = gate + extra_gate, up + extra_up
        if gate is None:
            return self.down(self.act(up))
        return self.down(glu(gate, up, self.act))


#: The default MLP: SwiGLU (silu, gated, no biases).
SwiGLU = MLP
