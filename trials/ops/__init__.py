"""Numerical ops of the mixers: pure functions, each fast path beside its `naive_*` reference.

| op                    | used by          | PyTorch fast path                               | CPU kernel |
| --------------------- | ---------------- | ----------------------------------------------- | ---------- |
| `selective_scan`      | Mamba            | chunked in-place parallel scan, custom backward | yes        |
| `ssd`                 | Mamba-2          | chunked matrix (SSD) form, custom backward      | yes        |
| `linear_scan`         | RG-LRU           | in-place parallel scan, custom backward         | yes        |
| `causal_conv1d`       | short convs      | channels-last depthwise conv, custom backward   | yes        |
| `fft_long_conv`       | Hyena            | FFT product of spectra, O(L log L)              | -          |
| `rms_norm`            | every RMSNorm    | one op, custom backward (reference: `RMSNorm`)  | -          |

The CPU kernels (`trials/ops/native/`, C++ compiled on first use and cached) walk each
sequence step by step with its state in cache; `native.kernel_for` is the one rule that picks
them (CPU, fp32 or fp64, library built), and the PyTorch path runs everywhere else. To give an
op a kernel: add its C entry points to `scan_kernels.cpp` and their signature to
`native._declare`, wrap them in an autograd Function beside the op's PyTorch path, and list the
op in `native.NATIVE_OPS`; `tests/test_ops.py` then holds both paths to the reference.

Every op takes (batch, length, ...) tensors, computes in at least fp32 (bf16 inputs are upcast,
fp64 is kept, autocast is switched off inside), returns the input's dtype, supports autograd for
every float input, and runs on the input's device.
The fast paths never loop over time steps in Python (only over chunks or over log2 levels);
the `naive_*` references do, and the tests hold every fast path to its reference.
"""

from trials.ops.conv import (
    causal_conv1d,
    causal_conv1d_step,
    fft_long_conv,
    naive_causal_conv1d,
    naive_long_conv,
)
from trials.ops.norm import naive_rms_norm, rms_norm
from trials.ops.scan import linear_scan, naive_linear_scan
from trials.ops.selective_scan import naive_selective_scan, selective_scan
from trials.ops.ssd import naive_ssd, ssd

__all__ = [
    "causal_conv1d",
    "causal_conv1d_step",
    "fft_long_conv",
    "linear_scan",
    "naive_causal_conv1d",
    "naive_linear_scan",
    "naive_long_conv",
    "naive_selective_scan",
    "naive_ssd",
    "naive_rms_norm",
    "rms_norm",
    "selective_scan",
    "ssd",
]
