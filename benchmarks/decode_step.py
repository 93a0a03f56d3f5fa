"""Mamba's one-token decode: `selective_scan_step` (plain tensor ops) against the one-token
`selective_scan` it replaced (the chunked autograd Function or the native kernel), as decode
ms/token of whole models, paired and alternated in one process.

    python benchmarks/decode_step.py                        # M*6 and jamba, d_model 64
    python benchmarks/decode_step.py --models 'M*2' --d-model 128 --rounds 7

Each round times `trials.train.measure.decode_ms_per_token` (the number a trial records) once
with the current step and once with the old call patched into the Mamba mixer, alternating the
order, on one thread; the table gives the medians and their ratio (old / new).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from search_spaces import ArchConfig, arch_names, load_arch
from trials.builder import build_model
from trials.mixers import mamba as mamba_module
from trials.ops import selective_scan
from trials.train.measure import decode_ms_per_token


def one_token_scan(x_t, dt_t, A, B_t, C_t, h, D=None, z_t=None):
    """The old step: `selective_scan` over a sequence of one token from the carried state."""
    y, state = selective_scan(x_t[:, None], dt_t[:, None], A, B_t[:, None], C_t[:, None], D=D,
                              z=None if z_t is None else z_t[:, None], h0=h, return_state=True)
    return y[:, 0], state


@contextlib.contextmanager
def old_step():
    previous = mamba_module.selective_scan_step
    mamba_module.selective_scan_step = one_token_scan
    try:
        yield
    finally:
        mamba_module.selective_scan_step = previous


def arch_for(name: str, d_model: int) -> ArchConfig:
    if name in arch_names():
        return load_arch(name, d_model=d_model)
    return ArchConfig.from_pattern(name, d_model=d_model, n_heads=4, d_state=16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["M*6", "jamba"])
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--context", type=int, default=64, help="tokens decoded per timing")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if min(args.d_model, args.context, args.rounds) < 1:
        parser.error("--d-model, --context and --rounds must be >= 1")
    torch.set_num_threads(1)
    device = torch.device("cpu")
    print(f"decode ms/token, d_model {args.d_model}, context {args.context}, one thread, "
          f"median of {args.rounds} paired rounds")
    print(f"{'model':<12} {'old ms/tok':>10} {'new ms/tok':>10} {'old/new':>8}")
    for name in args.models:
        model = build_model(arch_for(name, args.d_model), seed=0)
        times: dict[str, list[float]] = {"old": [], "new": []}
        for round_ in range(args.rounds):
            order = ("old", "new") if round_ % 2 == 0 else ("new", "old")
            for which in order:
                with old_step() if which == "old" else contextlib.nullcontext():
                    times[which].append(decode_ms_per_token(model, args.context, device,
                                                            timed_steps=args.context))
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        print(f"{name:<12} {old:>10.3f} {new:>10.3f} {old / new:>7.2f}x")


if __name__ == "__main__":
    main()
