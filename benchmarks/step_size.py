"""Mamba-1's step size, softplus(x W^T + b): the native kernel against the op's fallback.

    python benchmarks/step_size.py [--rows 2048] [--width 128] [--ranks 1 2 4 ...]
                                   [--repeats 200] [--threads 1] [--json-out FILE]
    python benchmarks/step_size.py --steps 'M*6' [--seqs 64 256] [--repeats 41]

For each rank R: the time of one forward and of one forward + backward (x, weight and bias all
requiring gradients) of `softplus_linear` on x (rows, R), read in place as the dt slice of a
(rows, R + 32) tensor the way Mamba's x_proj output is, weight (width, R), bias (width,), once
on the native kernel and once on the op's fallback (`F.linear`, then the softplus op on its own
native kernel: what runs above the rank limit, and what the mixer ran before the op), the two
alternating call by call; the minimum over the repeats of each. The defaults are `M*6`'s
shapes at seq 64: batch 32 x 64 tokens, d_inner 128. "native / fallback" is what
`trials.ops.step_size.MAX_NATIVE_RANK` is chosen from.

`--steps MODEL`: whole training steps of MODEL (`proxy_throughput.training_step`: batch 32,
d_model 64, forward, cross-entropy, backward, AdamW) with the op on its kernel and on its
fallback, alternating step by step in one process (so that the machine's load falls on both
alike); the medians and their ratio per sequence length. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.proxy_throughput import (  # noqa: E402
    alternated_medians,
    build_arch,
    training_step,
)
from trials.ops import softplus_linear, step_size  # noqa: E402

RANKS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
D_STATE_TWICE = 32  # the B and C columns beside dt in x_proj's output (2 x d_state 16)


def inputs(rows: int, width: int, rank: int):
    g = torch.Generator().manual_seed(rank)
    wide = torch.randn(rows, rank + D_STATE_TWICE, generator=g)
    x = wide[:, :rank].requires_grad_()  # a strided view, as the mixer passes it
    weight = (torch.randn(width, rank, generator=g) * rank ** -0.5).requires_grad_()
    bias = (torch.rand(width, generator=g) * 4 - 6).requires_grad_()  # step sizes 2e-3..0.13
    return x, weight, bias


def timings(rows: int, width: int, rank: int, repeats: int) -> dict[str, float]:
    x, weight, bias = inputs(rows, width, rank)
    grad = torch.randn(rows, width)

    def forward():
        with torch.no_grad():
            softplus_linear(x, weight, bias)

    def both():
        torch.autograd.grad(softplus_linear(x, weight, bias), (x, weight, bias), grad)

    best: dict[str, float] = {}
    for round_ in range(repeats + 1):  # round 0 warms up
        for name, fn in (("fwd", forward), ("fwd+bwd", both)):
            for kernel in ("native", "fallback"):
                with fallback() if kernel == "fallback" else contextlib.nullcontext():
                    start = time.perf_counter()
                    fn()
                    seconds = time.perf_counter() - start
                if round_:
                    key = f"{name} {kernel}"
                    best[key] = min(best.get(key, float("inf")), seconds)
    return best


@contextlib.contextmanager
def fallback():
    """The op's fallback at any rank, as it runs above the rank limit."""
    limit, step_size.MAX_NATIVE_RANK = step_size.MAX_NATIVE_RANK, 0
    try:
        yield
    finally:
        step_size.MAX_NATIVE_RANK = limit


def step_ratios(model: str, seqs: list[int], repeats: int, d_model: int = 64,
                batch: int = 32) -> list[dict]:
    """Median training-step seconds of `model` with the op's kernel and with its fallback,
    alternating step by step (`proxy_throughput.alternated_medians`), per sequence length."""
    rows = []
    for seq in seqs:
        step = training_step(build_arch(model, d_model), batch, seq)

        def fallback_step() -> None:
            with fallback():
                step()

        medians = alternated_medians({"native": step, "fallback": fallback_step}, repeats)
        native_s, fallback_s = medians["native"], medians["fallback"]
        print(f"| {model} | {seq} | {native_s * 1e3:.1f} | {fallback_s * 1e3:.1f} | "
              f"{fallback_s / native_s:.3f} |", flush=True)
        rows.append({"model": model, "seq": seq, "native_s": native_s,
                     "fallback_s": fallback_s})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--ranks", type=int, nargs="+", default=list(RANKS))
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json-out", metavar="FILE")
    parser.add_argument("--steps", metavar="MODEL",
                        help="time whole training steps of MODEL instead (e.g. 'M*6')")
    parser.add_argument("--seqs", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.steps:
        print(f"{args.steps}, batch 32, d_model 64, {args.threads} thread(s); median ms of "
              f"{args.repeats} steps each, alternating")
        print("| model | seq | op on its kernel | op's fallback | fallback / kernel |")
        print("| --- | --- | --- | --- | --- |")
        rows = step_ratios(args.steps, args.seqs, args.repeats)
        if args.json_out:
            with open(args.json_out, "w") as f:
                json.dump(rows, f, indent=1)
        return
    print(f"rows {args.rows}, width {args.width}, {args.threads} thread(s); us, min of "
          f"{args.repeats}")
    print("| R | fwd native | fwd fallback | f+b native | f+b fallback | f+b native / fallback |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = []
    for rank in args.ranks:
        t = timings(args.rows, args.width, rank, args.repeats)
        us = {k: v * 1e6 for k, v in t.items()}
        ratio = us["fwd+bwd native"] / us["fwd+bwd fallback"]
        print(f"| {rank} | {us['fwd native']:.0f} | {us['fwd fallback']:.0f} | "
              f"{us['fwd+bwd native']:.0f} | {us['fwd+bwd fallback']:.0f} | {ratio:.2f} |",
              flush=True)
        rows.append({"rank": rank, "rows": args.rows, "width": args.width, **us})
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
