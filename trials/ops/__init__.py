"""Numerical ops of the mixers: pure functions, each fast path beside its `naive_*` reference.

| op               | used by       | PyTorch fast path                               | CPU kernel | CUDA library                |
| ---------------- | ------------- | ----------------------------------------------- | ---------- | --------------------------- |
| `selective_scan` | Mamba         | chunked in-place parallel scan, custom backward | yes        | mamba_ssm selective_scan_fn |
| `ssd`            | Mamba-2       | chunked matrix (SSD) form, custom backward      | yes        | fla chunk_simple_gla        |
| `linear_scan`    | RG-LRU        | in-place parallel scan, custom backward         | yes        | fla fused_recurrent_hgrn    |
| `causal_conv1d`  | short convs   | channels-last depthwise conv, custom backward   | yes        | causal_conv1d_fn            |
| `fft_long_conv`  | Hyena         | FFT product of spectra, O(L log L)              | L <= 1536 (direct sum) | -               |
| `rms_norm`       | every RMSNorm | one op, custom backward (reference: `RMSNorm`)  | yes        | -                           |
| `add_rms_norm`   | pre-norm residual adds | the add, then `rms_norm` (reference: `naive_add_rms_norm`) | yes | -              |
| `glu`            | SwiGLU, GeGLU, MoE, Mamba-2's gate | act(gate) * up, autograd (the reference itself) | yes (silu, tanh GELU) | -                           |
| `rope` (`rotate_heads`) | attention | `apply_rope` on the rotated channels            | yes        | -                           |
| `rglru_gates`    | RG-LRU        | the gates' composite (the reference itself)     | yes        | -                           |
| `softplus`       | Mamba's and Mamba-2's dt | `F.softplus` (the reference itself)             | yes        | -                           |
| `softplus_linear` | Mamba's dt   | softplus(`F.linear`) in fp32 (reference: `naive_softplus_linear`) | R <= 6     | -                 |
| `block_diagonal_linear` | RG-LRU's gates | einsum over the blocks (the reference itself) | yes   | -                           |
| `causal_attention` | A, L, shared | SDPA `is_causal`; banded blocks for a window | hd 8/16/32/64 | - (SDPA)               |

The CPU kernels (`trials/ops/native/`, C++ compiled on first use and cached) walk each
sequence step by step with its state in cache; the CUDA libraries are used when installed
(optional: `pip install hybrid-nas[gpu]`). `dispatch.kernel_for` is the one rule that picks an
implementation (device, dtype, library available), and the PyTorch path runs everywhere else.
Each op enters the registry where it is defined (`dispatch.register`) and asks `kernel_for`
on every call, which notes what ran: that is what a trial records as its `kernels`. To give an op a CPU kernel: add its C entry points to
`scan_kernels.cpp` and their signature to `native._declare`, wrap them in an autograd Function
beside the op's PyTorch path, and register the op with `native=True`; `tests/test_ops.py` then
holds both paths to the reference. A GPU library: a `dispatch.Fused` record and a wrapper that
maps the op's arguments onto it, tested in `tests/test_fused_kernels.py`.

Every op takes (batch, length, ...) tensors, computes in at least fp32 (bf16 inputs are upcast,
fp64 is kept, autocast is switched off inside), returns the input's dtype, supports autograd for
every float input, and runs on the input's device.
The fast paths never loop over time steps in Python (only over chunks or over log2 levels);
the `naive_*` references do, and the tests hold every fast path to its reference.
"""

from trials.ops.attention import causal_attention, naive_causal_attention
from trials.ops.block_diagonal import block_diagonal_linear, naive_block_diagonal_linear
from trials.ops.conv import (
    causal_conv1d,
    causal_conv1d_step,
    fft_long_conv,
    naive_causal_conv1d,
    naive_long_conv,
)
from trials.ops.elementwise import glu, naive_glu, naive_rglru_gates, rglru_gates, softplus
from trials.ops.norm import add_rms_norm, naive_add_rms_norm, naive_rms_norm, rms_norm
from trials.ops.scan import linear_scan, naive_linear_scan
from trials.ops.selective_scan import naive_selective_scan, selective_scan, selective_scan_step
from trials.ops.ssd import naive_ssd, ssd
from trials.ops.step_size import naive_softplus_linear, softplus_linear

__all__ = [
    "add_rms_norm",
    "block_diagonal_linear",
    "causal_attention",
    "causal_conv1d",
    "causal_conv1d_step",
    "fft_long_conv",
    "glu",
    "linear_scan",
    "naive_block_diagonal_linear",
    "naive_causal_attention",
    "naive_causal_conv1d",
    "naive_glu",
    "naive_rglru_gates",
    "naive_linear_scan",
    "naive_long_conv",
    "naive_selective_scan",
    "naive_ssd",
    "naive_add_rms_norm",
    "naive_rms_norm",
    "naive_softplus_linear",
    "rms_norm",
    "selective_scan",
    "selective_scan_step",
    "rglru_gates",
    "softplus",
    "softplus_linear",
    "ssd",
]
