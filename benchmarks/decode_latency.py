"""Decode latency as a trial records it (the prefix skipped: the state moved to its position)
against decoding every token of the prefix, per preset, alternated in one process.

    python benchmarks/decode_latency.py [--models jamba zamba ...] [--context 128] [--rounds 7]

Each round calls `trials.train.measure.decode_ms_per_token` once each way, the order swapped
every round, on one thread. Printed per model: the median ms/token of each way and their ratio
(the two time the same 16 steps, so it should read 1.00 within the noise), and the median wall
seconds each measurement took (what a trial pays for it).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from search_spaces import arch_names, load_arch
from trials.builder import build_model
from trials.train.measure import decode_ms_per_token

PRESETS = ("jamba", "zamba", "griffin", "mamba", "mamba2", "transformer", "hawk", "stripedhyena")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(PRESETS), choices=arch_names(),
                        metavar="PRESET")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    if min(args.context, args.rounds) < 1:
        parser.error("--context and --rounds must be >= 1")
    torch.set_num_threads(1)
    device = torch.device("cpu")
    print(f"decode ms/token at context {args.context}, one thread, median of {args.rounds} "
          "alternated rounds; wall s: one whole measurement")
    print(f"{'model':<14} {'skipped ms':>10} {'decoded ms':>10} {'ratio':>6} "
          f"{'skipped wall s':>14} {'decoded wall s':>14}")
    for name in args.models:
        model = build_model(load_arch(name), seed=0)
        decode_ms_per_token(model, args.context, device)  # warm-up: caches, first calls
        ms: dict[bool, list[float]] = {False: [], True: []}
        wall: dict[bool, list[float]] = {False: [], True: []}
        for round_ in range(args.rounds):
            for decoded in ((False, True) if round_ % 2 == 0 else (True, False)):
                started = time.perf_counter()
                ms[decoded].append(decode_ms_per_token(model, args.context, device,
                                                       decode_prefix=decoded))
                wall[decoded].append(time.perf_counter() - started)
        skipped, full = statistics.median(ms[False]), statistics.median(ms[True])
        print(f"{name:<14} {skipped:>10.3f} {full:>10.3f} {full / skipped:>6.2f} "
              f"{statistics.median(wall[False]):>14.3f} {statistics.median(wall[True]):>14.3f}")


if __name__ == "__main__":
    main()
