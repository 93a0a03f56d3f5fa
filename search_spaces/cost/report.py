"""Result types of the cost model and the dtype table.

    LayerCost   what one layer (or one shared weight set) costs; cache and state in *elements*
    KindCost    the sum over every layer of one kind; cache in *bytes*
    CostReport  the breakdown by kind plus its totals, at one context length and dtype
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: Bytes per stored element. Every weight-free state element (KV cache, conv and SSM states,
#: Hyena input history) is counted in the dtype the caller names.
DTYPE_BYTES: dict[str, int] = {
    "fp32": 4, "float32": 4,
    "bf16": 2, "bfloat16": 2,
    "fp16": 2, "float16": 2,
    "fp8": 1,
}
#: The short name a report carries for each accepted spelling.
_SHORT_NAME = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def resolve_dtype(dtype: str) -> tuple[str, int]:
    """(short name, bytes per element); ValueError naming the valid names otherwise."""
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise ValueError(f"dtype={dtype!r} is not known; valid dtypes: {', '.join(DTYPE_BYTES)}")
    return _SHORT_NAME.get(dtype, dtype), DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class LayerCost:
    """One layer's cost. `flops` is forward FLOPs per token. The decoding cache is split in two,
    in elements: `state`, the recurrent states (the SSM's h, the RG-LRU's h), which decoders
    often keep in higher precision (Nemotron-H's mamba_ssm_cache_dtype is float32), and `cache`,
    everything else (keys and values, convolution windows, Hyena's input history)."""

    params: int = 0
    active_params: int = 0
    flops: float = 0.0
    cache: int = 0
    state: int = 0

    @property
    def stored(self) -> int:
        """Every element of the decoding state: cache plus recurrent state."""
        return self.cache + self.state

    def __add__(self, other: "LayerCost") -> "LayerCost":
        return LayerCost(self.params + other.params, self.active_params + other.active_params,
                         self.flops + other.flops, self.cache + other.cache,
                         self.state + other.state)


def dense(params: int, flops: float, cache: int = 0, state: int = 0) -> LayerCost:
    """A cost whose every parameter is used by every token (all but MoE)."""
    return LayerCost(params, params, float(flops), cache, state)


@dataclass(frozen=True)
class KindCost:
    """Everything of one kind in the model. `count` is the number of layers of the kind (for
    "S" the number of invocations, for "norm" the number of RMSNorm modules)."""

    count: int
    params: int
    active_params: int
    flops_per_token: float
    cache_bytes: int


@dataclass(frozen=True)
class CostReport:
    """Analytic costs of one architecture at `context` tokens, caches stored in `dtype` and
    recurrent states in `state_dtype`.

    The totals are the sums of `breakdown`. `flops_per_token` is the forward pass averaged
    over the tokens of one sequence of `context` tokens processed in parallel; a training step
    (forward + backward) is about 3x that. `cache_bytes` is the inference state of one sequence
    after `context` tokens.
    """

    params: int
    active_params: int
    flops_per_token: float
    cache_bytes: int
    breakdown: dict[str, KindCost]
    context: int
    dtype: str
    state_dtype: str = ""

    @classmethod
    def from_breakdown(cls, breakdown: dict[str, KindCost], context: int,
                       dtype: str, state_dtype: str | None = None) -> "CostReport":
        parts = breakdown.values()
        return cls(params=sum(k.params for k in parts),
                   active_params=sum(k.active_params for k in parts),
                   flops_per_token=sum((k.flops_per_token for k in parts), 0.0),
                   cache_bytes=sum(k.cache_bytes for k in parts),
                   breakdown=dict(breakdown), context=context, dtype=dtype,
                   state_dtype=state_dtype or dtype)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict, the breakdown included."""
        return {"context": self.context, "dtype": self.dtype, "state_dtype": self.state_dtype,
                "params": self.params,
                "active_params": self.active_params, "flops_per_token": self.flops_per_token,
                "cache_bytes": self.cache_bytes,
                "breakdown": {kind: asdict(cost) for kind, cost in self.breakdown.items()}}
