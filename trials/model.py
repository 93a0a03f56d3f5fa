"""HybridLM: embedding, pre-norm residual layers (any mixer, any FFN), final norm, LM head.

    tokens -> embedding ─┬─> [ x + mixer(norm(x)) ; x + ffn(norm(x)) ] * layers -> norm -> head
                         └─> (the embeddings also feed Zamba's shared blocks)

Each residual add is done by the norm that follows it (`RMSNorm.add_forward`: one op for the add
and the norm, and one backward sweep that also sums the stream's gradients), so the layers pass
the stream on as (residual, delta) with the add still to do; see `Block.residual_forward`.

`forward(tokens)` returns the logits and the FFNs' auxiliary outputs (MoE load-balancing loss and
per-expert token counts); `init_state(batch, max_len)` and `step(tokens_t, state)` decode token
by token with the same outputs as `forward`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from trials.norm import RMSNorm


@dataclass
class LMOutput:
    logits: torch.Tensor  # (B, N, V)
    aux_loss: torch.Tensor  # scalar: the sum of the MoE load-balancing losses (0 without MoE)
    expert_counts: list[torch.Tensor] = field(default_factory=list)  # per MoE layer, (experts,)


class Block(nn.Module):
    """One residual layer: a mixer and an optional FFN, each behind its own RMSNorm (the mixer's
    left out with pre_norm=False: Zamba's shared block norms its own input).

    `forward(x, emb)` returns the layer's output. `residual_forward` is the same layer with each
    residual add left to the norm that follows it (`RMSNorm.add_forward`, one op for the add
    and the norm): it takes the stream as (residual, delta), whose sum is the layer's input,
    and returns the output the same way; `HybridLM` chains its layers so.
    """

    def __init__(self, mixer: nn.Module, ffn: nn.Module | None, d_model: int, eps: float,
                 pre_norm: bool = True) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.mixer_norm = RMSNorm(d_model, eps) if pre_norm else nn.Identity()
        self.mixer = mixer
        self.ffn_norm = RMSNorm(d_model, eps) if ffn is not None else None
        self.ffn = ffn
        self.takes_embedding = getattr(mixer, "takes_embedding", False)

    def _mixer(self, normed: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.mixer(normed, emb) if self.takes_embedding else self.mixer(normed)

    def _norm_input(self, residual: torch.Tensor, delta: torch.Tensor | None):
        """The layer's input residual + delta, and the mixer's normed view of it."""
        if self.pre_norm:
            return self.mixer_norm.add_forward(residual, delta)
        total = residual if delta is None else residual + delta
        return total, total

    def residual_forward(self, residual: torch.Tensor, delta: torch.Tensor | None,
                         emb: torch.Tensor):
        """(residual, delta) with residual + delta the input (delta None: residual is) ->
        (residual, delta, aux) with residual + delta the output."""
        x, normed = self._norm_input(residual, delta)
        mixed = self._mixer(normed, emb)
        if self.ffn is None:
            return x, mixed, None
        h, normed = self.ffn_norm.add_forward(x, mixed)
        y, aux = self.ffn(normed)
        return h, y, aux

    def forward(self, x: torch.Tensor, emb: torch.Tensor):
        residual, delta, aux = self.residual_forward(x, None, emb)
        return residual + delta, aux

    def step(self, x_t: torch.Tensor, state, emb_t: torch.Tensor):
        normed = self.mixer_norm(x_t)
        if self.takes_embedding:
            y_t, state = self.mixer.step(normed, state, emb_t)
        else:
            y_t, state = self.mixer.step(normed, state)
        h = x_t + y_t
        if self.ffn is not None:
            y, _ = self.ffn(self.ffn_norm(h)[:, None, :])
            h = h + y[:, 0, :]
        return h, state


class HybridLM(nn.Module):
    def __init__(self, blocks: list[Block], vocab_size: int, d_model: int, eps: float,
                 tie_embeddings: bool) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = RMSNorm(d_model, eps)
        self.lm_head = None if tie_embeddings else nn.Linear(d_model, vocab_size, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.embedding.weight, std=0.02)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, std=0.02)

    def _head(self, normed: torch.Tensor) -> torch.Tensor:
        weight = self.embedding.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(normed, weight)

    def forward(self, tokens: torch.Tensor) -> LMOutput:
        """tokens: (B, N) integer ids."""
        emb = self.embedding(tokens)
        residual, delta = emb, None  # the stream is residual + delta (see Block)
        aux_loss = emb.new_zeros((), dtype=torch.float32)
        counts = []
        for block in self.blocks:
            residual, delta, aux = block.residual_forward(residual, delta, emb)
            if aux is not None:
                aux_loss = aux_loss + aux.loss
                counts.append(aux.expert_counts)
        _, normed = self.final_norm.add_forward(residual, delta)
        return LMOutput(self._head(normed), aux_loss, counts)

    def init_state(self, batch: int, max_len: int, device=None, dtype=None) -> list:
        """Per-layer decoding states for `batch` sequences of up to `max_len` tokens."""
        device = device or self.embedding.weight.device
        dtype = dtype or self.embedding.weight.dtype
        return [block.mixer.init_state(batch, max_len, device=device, dtype=dtype)
                for block in self.blocks]

    def step(self, tokens_t: torch.Tensor, state: list):
        """tokens_t: (B,) -> (logits_t: (B, V), state)."""
        emb_t = self.embedding(tokens_t)
        h = emb_t
        new_state = []
        for block, layer_state in zip(self.blocks, state):
            h, layer_state = block.step(h, layer_state, emb_t)
            new_state.append(layer_state)
        return self._head(self.final_norm(h)), new_state
