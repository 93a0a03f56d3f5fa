"""The analytic cost model: parameters, active parameters, FLOPs per token, cache bytes.

    report = estimate(arch, context=8192, dtype="bf16")
    report.params, report.active_params, report.flops_per_token, report.cache_bytes
    report.breakdown["M"]  # KindCost(count, params, active_params, flops_per_token, cache_bytes)

Pure Python, one small function per layer kind (attention.py, ssm.py, recurrent.py, hyena.py,
ffn.py), each with its formula in the docstring; `trials` builds modules whose parameter
counts and decoding states equal these numbers exactly.

Breakdown keys: "embedding", the mixer letters present, the FFN kinds present ("mlp", "moe"),
"norm", and "lm_head" only when the embeddings are untied. "norm" holds the RMSNorms around the
layers (one before each mixer, one before each FFN, the final one); RMSNorms *inside* a mixer
(the shared block's two, Mamba-2's gated norm) count with that mixer, so that each kind's
numbers equal the module that implements it. A tied LM head's FLOPs (2*d*V) count under
"embedding".

FLOP conventions (forward pass, per token, averaged over one sequence of `context` tokens
processed in parallel; a training step, forward plus backward, is about 3x):
    - a multiply-accumulate is 2 FLOPs; a linear in->out is 2*in*out, with or without a bias
      (the bias add replaces the first accumulation's add);
    - an elementwise multiply or add is 1 FLOP; nonlinearities (exp, silu, softplus, sin,
      sqrt, GeLU), norms, softmax, RoPE and the residual adds are not counted;
    - causal attention: scores plus weighted sum, 4*H*head_dim per key a query sees;
    - a depthwise conv of width k with bias: 2*k per channel;
    - recurrences (Mamba scans, RG-LRU): the recurrent form's arithmetic, per token;
    - Hyena's long convolutions: FFTs of length 2*context, a real FFT costing 2.5*L*log2(L);
    - embedding lookup 0; LM head 2*d*V (also when tied).
Cache: elements of the per-sequence decoding state times the dtype's bytes; recurrent states
(SSM and RG-LRU hidden states) may be counted in another dtype (`state_dtype`, e.g. fp32).
"""

from search_spaces.cost.attention import shared_weights
from search_spaces.cost.model import FFN_COSTS, MIXER_COSTS, estimate
from search_spaces.cost.report import DTYPE_BYTES, CostReport, KindCost, LayerCost

__all__ = ["DTYPE_BYTES", "FFN_COSTS", "MIXER_COSTS", "CostReport", "KindCost", "LayerCost",
           "estimate", "shared_weights"]
