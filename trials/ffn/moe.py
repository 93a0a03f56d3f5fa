"""Mixture of MLP experts (SwiGLU by default; any activation, gated or not, biases optional,
as `trials.ffn.mlp.MLP`) with a top-k softmax router (Mixtral style).

Shape legend: T tokens (every leading dim flattened), d model width, F = d_ff expert width,
E experts, K = top_k experts per token.

    x ─ router ─ softmax ─ top-k ─ renormalise ─> gates (T, K), experts (T, K)
                                   (skipped with renormalize=False: Jamba's router)
    y_t = sum_k gate_tk * SwiGLU_{expert_tk}(x_t)

Dispatch: the T*K (token, expert) slots are sorted by expert and their tokens gathered once
(T*K, d), so that each expert's tokens are one contiguous slice; each expert runs one batched
SwiGLU over its slice, and the gated outputs of all slots go back with one `index_add_`. The
Python loop is over experts, never over tokens. Expert weights are stacked tensors (E, d, F)
and (E, F, d), unbound once per call (one backward node for each stack, not one per expert).

Load balancing (Switch Transformer, Mixtral): loss = E * sum_e f_e * P_e, with f_e the fraction
of the T*K slots routed to expert e (not differentiable) and P_e the mean router probability of
e (differentiable); it is 1 for a perfectly uniform router and grows as routing collapses.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from trials.ffn.mlp import activation
from trials.ops.elementwise import glu


class MoEAux(NamedTuple):
    loss: Tensor  # scalar fp32: the load-balancing loss
    expert_counts: Tensor  # (E,) int64, tokens routed to each expert, detached, for logging


class MoE(nn.Module):
    def __init__(self, d_model: int, d_ff: int, n_experts: int, top_k: int, act: str = "silu",
                 gated: bool = True, bias: bool = False, renormalize: bool = True) -> None:
        super().__init__()
        if not 1 <= top_k <= n_experts:
            raise ValueError(f"top_k={top_k} must be between 1 and n_experts={n_experts}")
        self.n_experts, self.top_k, self.renormalize = n_experts, top_k, renormalize
        self.act = activation(act)
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.w_gate = nn.Parameter(torch.empty(n_experts, d_model, d_ff)) if gated else None
        self.w_up = nn.Parameter(torch.empty(n_experts, d_model, d_ff))
        self.w_down = nn.Parameter(torch.empty(n_experts, d_ff, d_model))
        # per-expert biases of gate, up and down (None without biases)
        self.b_gate = nn.Parameter(torch.empty(n_experts, d_ff)) if bias and gated else None
        self.b_up = nn.Parameter(torch.empty(n_experts, d_ff)) if bias else None
        self.b_down = nn.Parameter(torch.empty(n_experts, d_model)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.router.reset_parameters()
        # the bounds nn.Linear uses, so that each expert starts like a dense MLP
        for weight, bias in ((self.w_gate, self.b_gate), (self.w_up, self.b_up),
                             (self.w_down, self.b_down)):
            if weight is None:
                continue
            bound = 1 / math.sqrt(weight.shape[1])
            nn.init.uniform_(weight, -bound, bound)
            if bias is not None:
                nn.init.uniform_(bias, -bound, bound)

    def route(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """tokens (T, d) -> probabilities (T, E) fp32, gates (T, K) (summing to 1 when
        renormalised), experts (T, K)."""
        probs = self.router(tokens).float().softmax(dim=-1)
        top_p, experts = probs.topk(self.top_k, dim=-1)
        gates = top_p / top_p.sum(dim=-1, keepdim=True) if self.renormalize else top_p
        return probs, gates, experts

    @staticmethod
    def _linear(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return h @ weight if bias is None else torch.addmm(bias, h, weight)

    def _weights(self) -> list[tuple[Tensor | None, ...]]:
        """Per expert: (w_gate, b_gate, w_up, b_up, w_down, b_down), None where absent."""
        stacks = (self.w_gate, self.b_gate, self.w_up, self.b_up, self.w_down, self.b_down)
        unbound = [(None,) * self.n_experts if t is None else t.unbind(0) for t in stacks]
        return list(zip(*unbound))

    def _expert(self, weights: tuple[Tensor | None, ...], h: Tensor) -> Tensor:
        w_gate, b_gate, w_up, b_up, w_down, b_down = weights
        up = self._linear(h, w_up, b_up)
        if w_gate is None:
            hidden = self.act(up)
        else:
            hidden = glu(self._linear(h, w_gate, b_gate), up, self.act)
        return self._linear(hidden, w_down, b_down)

    def expert(self, e: int, h: Tensor) -> Tensor:
        """Expert e's MLP on h (n, d) -> (n, d)."""
        return self._expert(self._weights()[e], h)

    def forward(self, x: Tensor) -> tuple[Tensor, MoEAux]:
        d = x.shape[-1]
        tokens = x.reshape(-1, d)  # (T, d)
        probs, gates, experts = self.route(tokens)
        slot_expert = experts.flatten()  # (T*K,); slot s belongs to token s // K
        counts = torch.bincount(slot_expert, minlength=self.n_experts)  # (E,)
        order = slot_expert.argsort(stable=True)  # slots grouped by expert, in expert order
        slot_token = order // self.top_k
        slot_gate = gates.flatten()[order].to(x.dtype)
        sorted_tokens = tokens.index_select(0, slot_token)  # (T*K, d), experts' slices in order
        outputs = [self._expert(weights, h) for weights, h in
                   zip(self._weights(), sorted_tokens.split(counts.tolist()))]
        gated = torch.cat(outputs) * slot_gate[:, None]  # (T*K, d)
        y = torch.zeros_like(tokens).index_add_(0, slot_token, gated)
        fraction = counts.float() / slot_expert.numel()  # f_e
        loss = self.n_experts * (fraction * probs.mean(dim=0)).sum()
        return y.view(x.shape), MoEAux(loss, counts.detach())
