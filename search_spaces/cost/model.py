"""`estimate(arch, context, dtype)`: add up the per-kind costs of a whole model.

    embedding V*d (+ the LM head's 2*d*V FLOPs per token when tied)
    for each layer:  RMSNorm(d) -> mixer -> [RMSNorm(d) -> FFN]   (the FFN part unless "none";
                     no RMSNorm before a mixer whose kind has pre_norm=False: the shared block)
    final RMSNorm(d) -> LM head (V*d weights only when untied; 2*d*V FLOPs either way)

Zamba's shared block (S) weights are added once per distinct block id; everything else an S
layer costs (its projection, its compute, its KV cache) is added at every invocation.
"""

from __future__ import annotations

from collections import Counter

from search_spaces.arch import ArchConfig
from search_spaces.cost.attention import (
    global_attention,
    local_attention,
    shared_invocation,
    shared_weights,
)
from search_spaces.cost.ffn import mlp, moe
from search_spaces.cost.hyena import hyena
from search_spaces.cost.recurrent import rglru_block
from search_spaces.cost.report import CostReport, KindCost, LayerCost, dense, resolve_dtype
from search_spaces.cost.ssm import mamba, mamba2
from search_spaces.layers import (
    ATTENTION,
    FFNS,
    HYENA,
    LOCAL_ATTENTION,
    MAMBA,
    MAMBA2,
    MIXER_KIND,
    MIXERS,
    MLP,
    MOE,
    NO_FFN,
    RGLRU,
    SHARED,
)

#: One cost function per layer kind: (arch, layer, context) -> LayerCost of one layer.
#: For "S" that is one invocation; the shared weights come from `shared_weights(arch)`.
MIXER_COSTS = {
    ATTENTION: global_attention,
    LOCAL_ATTENTION: local_attention,
    MAMBA: mamba,
    MAMBA2: mamba2,
    RGLRU: rglru_block,
    HYENA: hyena,
    SHARED: shared_invocation,
}
FFN_COSTS = {MLP: mlp, MOE: moe}

EMBEDDING, LM_HEAD, NORM = "embedding", "lm_head", "norm"


def _check_context(context: object) -> int:
    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        raise ValueError(f"context={context!r} must be an integer >= 1")
    return context


def estimate(arch: ArchConfig, context: int = 8192, dtype: str = "bf16",
             state_dtype: str | None = None) -> CostReport:
    """Parameters, active parameters, forward FLOPs per token and inference cache bytes of
    `arch` at `context` tokens, caches (keys, values, convolution windows) stored in `dtype`
    and recurrent states in `state_dtype` (default: `dtype`; see DTYPE_BYTES).

    Raises ValueError for a context that is not an integer >= 1 or an unknown dtype.
    """
    context = _check_context(context)
    dtype_name, element_bytes = resolve_dtype(dtype)
    state_name, state_bytes = resolve_dtype(state_dtype) if state_dtype is not None \
        else (dtype_name, element_bytes)
    d, vocab = arch.d_model, arch.vocab_size
    sums: dict[str, LayerCost] = {}
    counts: Counter[str] = Counter()

    def add(kind: str, cost: LayerCost, count: int = 1) -> None:
        sums[kind] = sums.get(kind, LayerCost()) + cost
        counts[kind] += count

    head_flops = 2 * d * vocab
    add(EMBEDDING, dense(vocab * d, head_flops if arch.tie_embeddings else 0))
    norms = 1  # the final norm
    for layer in arch.layers:
        add(layer.mixer, MIXER_COSTS[layer.mixer](arch, layer, context))
        norms += MIXER_KIND[layer.mixer].pre_norm
        if layer.ffn != NO_FFN:
            add(layer.ffn, FFN_COSTS[layer.ffn](arch, layer, context))
            norms += 1
    shared_ids = {layer.arg for layer in arch.layers if layer.mixer == SHARED}
    for _ in shared_ids:
        add(SHARED, dense(shared_weights(arch), 0), count=0)
    add(NORM, dense(norms * d, 0), count=norms)
    if not arch.tie_embeddings:
        add(LM_HEAD, dense(vocab * d, head_flops))

    order = (EMBEDDING, *MIXERS, *(f for f in FFNS if f != NO_FFN), NORM, LM_HEAD)
    breakdown = {
        kind: KindCost(count=counts[kind], params=sums[kind].params,
                       active_params=sums[kind].active_params,
                       flops_per_token=sums[kind].flops,
                       cache_bytes=sums[kind].cache * element_bytes
                       + sums[kind].state * state_bytes)
        for kind in order if kind in sums
    }
    return CostReport.from_breakdown(breakdown, context=context, dtype=dtype_name,
                                     state_dtype=state_name)
