"""Hyena's long conv: the native kernel's direct sum against the FFT, forward + backward.

    python benchmarks/long_conv.py [--lengths 64 256 1024 1536 2048] [--channels 64]
                                   [--rounds 7] [--threads 1]

Both paths of `trials.ops.fft_long_conv` on the same (B, L, C) input, filter and bias, taking
turns in one process (so that the machine's drift falls on both), batch 32 up to L 512 and 8
beyond. Printed per length: the median milliseconds of each, FFT over direct, and the direct
sum's rate (3 x L(L+1)/2 multiply-adds per channel and sequence, forward and both gradients).
Where the ratio crosses 1 is where `trials.ops.conv.DIRECT_LONG_CONV_MAX_LENGTH` belongs.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@contextlib.contextmanager
def direct_up_to(length: int):
    from trials.ops import conv

    previous = conv.DIRECT_LONG_CONV_MAX_LENGTH
    conv.DIRECT_LONG_CONV_MAX_LENGTH = length
    try:
        yield
    finally:
        conv.DIRECT_LONG_CONV_MAX_LENGTH = previous


def main() -> None:
    import torch

    from trials.ops import fft_long_conv, native

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", nargs="+", type=int, default=[64, 256, 1024, 1536, 2048])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if native.library() is None:
        sys.exit(f"the native kernels did not build: {native.failure()}")

    print(f"fp32, {args.channels} channels, {args.threads} thread(s), {args.rounds} rounds; "
          "forward + backward")
    print(f"{'length':>7} {'batch':>6} {'FFT ms':>9} {'direct ms':>10} {'FFT/direct':>11} "
          f"{'direct GFLOP/s':>15}")
    for length in args.lengths:
        batch = 32 if length <= 512 else 8
        u = torch.randn(batch, length, args.channels, requires_grad=True)
        h = torch.randn(length, args.channels, requires_grad=True)
        bias = torch.randn(args.channels, requires_grad=True)
        grad = torch.randn(batch, length, args.channels)

        def run(limit: int) -> float:
            with direct_up_to(limit):
                started = time.perf_counter()
                fft_long_conv(u, h, bias).backward(grad)
                return time.perf_counter() - started

        paths = {"fft": 0, "direct": length}
        for limit in paths.values():
            run(limit)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in paths}
        for index in range(args.rounds):
            order = list(paths) if index % 2 == 0 else list(paths)[::-1]
            for name in order:
                times[name].append(run(paths[name]))
        fft_s, direct_s = (statistics.median(times[name]) for name in ("fft", "direct"))
        flops = 3 * 2 * batch * args.channels * length * (length + 1) / 2
        print(f"{length:>7} {batch:>6} {fft_s * 1e3:>9.2f} {direct_s * 1e3:>10.2f} "
              f"{fft_s / direct_s:>11.2f} {flops / direct_s / 1e9:>15.1f}")


if __name__ == "__main__":
    main()
