"""The one contract every mixer keeps (DESIGN.md), and helpers to measure decoding state.

    forward(x)            x: (B, N, d) -> (B, N, d), causal
    init_state(batch, max_len, device=None, dtype=None) -> state
                          everything decoding up to `max_len` tokens keeps per sequence; its
                          tensors are exactly the cache the cost model counts
    step(x_t, state)      x_t: (B, d) -> (y_t: (B, d), state); the same outputs as `forward`

A state is a dict of tensors, plus the position (tokens decoded so far) under "pos" where
`step` depends on it (a KV cache, Hyena's history). A step's cost depends on its state through
"pos" alone, which is how decode latency is timed without decoding the whole prefix
(`trials.train.measure`). Anything derived from the weights alone (a Hyena filter, RoPE tables)
is not state. Mixers that read the input embeddings (Zamba's shared block) set
`takes_embedding = True` and take `emb` / `emb_t` as a second argument.
Mixers take plain keyword arguments, never the ArchConfig (trials.builder maps one to the other).
"""

from __future__ import annotations

from typing import Any

import torch

State = dict[str, Any]
POSITION = "pos"  # the state key of the tokens decoded so far


def state_bytes(state: Any) -> int:
    """Bytes held by the tensors in a (nested) state: what the cost model's cache counts."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0
