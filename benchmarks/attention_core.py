"""The attention core alone, forward + backward: the native kernel against the PyTorch path.

    python benchmarks/attention_core.py [--seqs 64 256 1024] [--head-dims 16] [--heads 4]
        [--kv-heads 4] [--window W] [--batch 32] [--repeats 21] [--threads 1]

One layer's `causal_attention` as the attention mixer calls it: q, k, v transposed views of the
projections' (B, N, heads, hd) layout, a dense output gradient (as the output projection sends
it). `native` is the compiled kernel, `pytorch` the op's fallback (SDPA with `is_causal`, or the
banded block form with a window shorter than the sequence), both through `causal_attention`:
the second under `dispatch.disabled()`. The two alternate call by call in one process, so that
another process's load falls on both alike; the figures are medians over the repeats, after
one warm-up each. Nothing here asserts; tests/test_ops.py checks the results.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from trials.ops import dispatch
from trials.ops.attention import causal_attention


def inputs(batch: int, heads: int, kv_heads: int, length: int, head_dim: int):
    g = torch.Generator().manual_seed(0)

    def projected(n_heads: int):
        t = torch.randn(batch, length, n_heads, head_dim, generator=g)
        return t.transpose(1, 2).requires_grad_()

    q, k, v = projected(heads), projected(kv_heads), projected(kv_heads)
    grad = torch.randn(batch, length, heads, head_dim, generator=g).transpose(1, 2)
    return q, k, v, grad


def step(q, k, v, grad, window, context) -> float:
    """Seconds for one forward and backward pass."""
    with context():
        start = time.perf_counter()
        o = causal_attention(q, k, v, window)
        torch.autograd.grad(o, (q, k, v), grad)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seqs", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[16])
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=None, help="default: --heads")
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kv_heads = args.kv_heads or args.heads
    paths = {"native": contextlib.nullcontext, "pytorch": dispatch.disabled}
    print("| seq | head_dim | native ms | pytorch ms | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for head_dim in args.head_dims:
        for length in args.seqs:
            case = inputs(args.batch, args.heads, kv_heads, length, head_dim)
            times: dict[str, list[float]] = {name: [] for name in paths}
            for name, context in paths.items():  # warm-up
                step(*case, args.window, context)
            for _ in range(args.repeats):
                for name, context in paths.items():
                    times[name].append(step(*case, args.window, context))
            native, pytorch = (statistics.median(times[name]) * 1e3 for name in paths)
            print(f"| {length} | {head_dim} | {native:.2f} | {pytorch:.2f} | "
                  f"{pytorch / native:.2f} |", flush=True)


if __name__ == "__main__":
    main()
