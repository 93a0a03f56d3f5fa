"""The GPU session's one script: every fused kernel against its reference, then the `quick`
suite in bf16 against fp32.

    python benchmarks/gpu_quick.py                                  # kernels, jamba, transformer
    python benchmarks/gpu_quick.py --kernels-only                   # the kernel table alone
    python benchmarks/gpu_quick.py --presets griffin mamba2 --steps 300 --json-out rows.json

Kernels: for every op with a fused CUDA library (`trials.ops.dispatch`), the implementation the
rule picks on this device runs forward and backward at a proxy-training size; its outputs and
input gradients are compared with the op's step-by-step `naive_*` reference (max error relative
to the reference's largest magnitude), and its fwd+bwd time with the PyTorch path's
(`dispatch.disabled()`), paired and alternated in one process, as a ratio. An op whose library
is absent, or a machine without CUDA, prints the row as skipped with the reason.

Presets:
Every preset is trained twice through `run_trial`, once at the precision the device rule picks
(bf16 mixed on a GPU that supports it) and once in fp32 ("32-true"), same seed, same data. On a
machine without CUDA both runs are fp32 on the CPU and the script says so: it still runs end to
end, which is how it is checked without a GPU. What it measures on a GPU is the pure-PyTorch
path plus whichever fused libraries are installed (`run_trial`'s `kernels` lists them).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

import torch

from search_spaces import arch_names, load_arch
from trials import ops
from trials.ops import dispatch
from trials.train import Budget, run_trial
from trials.train.measure import pick_device

FP32 = "32-true"


def kernel_cases(device: str, batch: int, length: int) -> dict:
    """op -> (fast, naive, inputs) at a proxy-training size: d_inner 128, d_state 16; Mamba-2
    with 8 heads of 16 and one B/C group; the conv over 128 channels, width 4."""
    def make(**shapes):
        return {name: None if spec is None else spec().to(device).requires_grad_()
                for name, spec in shapes.items()}

    b, t = batch, length
    return {
        "selective_scan": (functools.partial(ops.selective_scan, return_state=True),
                           functools.partial(ops.naive_selective_scan, return_state=True),
                           make(x=lambda: torch.randn(b, t, 128),
                                dt=lambda: torch.rand(b, t, 128) * 0.1 + 1e-3,
                                A=lambda: -torch.rand(128, 16) * 4 - 0.05,
                                B=lambda: torch.randn(b, t, 16), C=lambda: torch.randn(b, t, 16),
                                D=lambda: torch.randn(128), z=lambda: torch.randn(b, t, 128),
                                h0=lambda: torch.randn(b, 128, 16))),
        "ssd": (functools.partial(ops.ssd, return_state=True),
                functools.partial(ops.naive_ssd, return_state=True),
                make(x=lambda: torch.randn(b, t, 8, 16), dt=lambda: torch.rand(b, t, 8) * 0.1,
                     A=lambda: -torch.rand(8) * 4 - 0.05, B=lambda: torch.randn(b, t, 1, 16),
                     C=lambda: torch.randn(b, t, 1, 16), D=lambda: torch.randn(8),
                     h0=lambda: torch.randn(b, 8, 16, 16))),
        "linear_scan": (functools.partial(ops.linear_scan, return_state=True),
                        functools.partial(ops.naive_linear_scan, return_state=True),
                        make(a=lambda: torch.rand(b, t, 128) * 0.5 + 0.5,
                             b=lambda: torch.randn(b, t, 128), h0=lambda: torch.randn(b, 128))),
        "causal_conv1d": (functools.partial(ops.causal_conv1d, return_state=True, silu=True),
                          functools.partial(ops.naive_causal_conv1d, return_state=True,
                                            silu=True),
                          make(x=lambda: torch.randn(b, t, 128), weight=lambda: torch.randn(128, 4),
                               bias=lambda: torch.randn(128),
                               state=lambda: torch.randn(b, 128, 3))),
    }


def forward_backward(fn, inputs: dict) -> list[torch.Tensor]:
    """Outputs and the gradients of every input, for loss = sum(outputs * fixed weights)."""
    outs = fn(**inputs)
    gen = torch.Generator(device=outs[0].device).manual_seed(1)
    loss = sum((o.float() * torch.randn(o.shape, generator=gen, device=o.device)).sum()
               for o in outs)
    leaves = [v for v in inputs.values() if v is not None]
    return [*outs, *torch.autograd.grad(loss, leaves)]


def max_error(actual: list[torch.Tensor], expected: list[torch.Tensor]) -> float:
    return max(((a.double() - e.double()).abs().max() / e.abs().max().clamp_min(1)).item()
               for a, e in zip(actual, expected))


def paired_ms(first, second, repeats: int) -> tuple[float, float]:
    """Median ms of two callables, alternated so that drift in the machine hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, into in ((first, times[0]), (second, times[1])):
            torch.cuda.synchronize()
            started = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            into.append((time.perf_counter() - started) * 1e3)
    return statistics.median(times[0]), statistics.median(times[1])


def kernel_rows(args: argparse.Namespace) -> list[dict]:
    """One row per op with a fused library: which ran, its max error, fused / PyTorch time."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    cases = kernel_cases(device, args.kernel_batch, args.kernel_length)
    rows = []
    for op, (fast, naive, inputs) in cases.items():
        first = next(v for v in inputs.values() if v is not None)
        kernel = dispatch.kernel_for(op, first.detach())
        row = {"op": op, "kernel": kernel, "library": dispatch.OPS[op].fused.name}
        if device != "cuda" or kernel != row["library"]:
            row["skipped"] = ("no CUDA device" if device != "cuda"
                              else f"{row['library']} is not installed or did not import")
            rows.append(row)
            continue
        expected = forward_backward(naive, inputs)
        row["max_error"] = max_error(forward_backward(fast, inputs), expected)
        with dispatch.disabled():
            row["pytorch_max_error"] = max_error(forward_backward(fast, inputs), expected)

        def run_pytorch():
            with dispatch.disabled():
                forward_backward(fast, inputs)

        def run_fused():
            forward_backward(fast, inputs)

        for _ in range(3):  # warm-up: autotuning, compilation, allocator
            run_fused(), run_pytorch()
        row["fused_ms"], row["pytorch_ms"] = paired_ms(run_fused, run_pytorch, args.repeats)
        row["speedup"] = row["pytorch_ms"] / row["fused_ms"]
        rows.append(row)
    return rows


def print_kernel_rows(rows: list[dict], args: argparse.Namespace) -> None:
    print(f"\nfused kernels, fwd+bwd at batch {args.kernel_batch}, length {args.kernel_length} "
          f"(max error: relative to the naive reference's largest magnitude)")
    print(f"{'op':<15} {'kernel':<26} {'max err':>9} {'pytorch err':>11} {'fused ms':>9} "
          f"{'pytorch ms':>10} {'speedup':>8}")
    for row in rows:
        if "skipped" in row:
            print(f"{row['op']:<15} {row['library']:<26} skipped: {row['skipped']}")
            continue
        print(f"{row['op']:<15} {row['kernel']:<26} {row['max_error']:>9.2e} "
              f"{row['pytorch_max_error']:>11.2e} {row['fused_ms']:>9.2f} "
              f"{row['pytorch_ms']:>10.2f} {row['speedup']:>7.2f}x")


def measure(preset: str, precision: str, args: argparse.Namespace) -> dict:
    budget = Budget(steps=args.steps, batch_size=args.batch_size, decode_context=128)
    result = run_trial(load_arch(preset, d_model=args.d_model), "quick", budget, seed=0,
                       precision=precision)
    return {"preset": preset, "precision": result.precision, "device": result.device,
            "status": result.status, "failure": result.failure, "quality": result.quality,
            "train_tokens_per_s": result.measured.get("train_tokens_per_s"),
            "decode_ms_per_token": result.measured.get("decode_ms_per_token"),
            "peak_memory_bytes": result.measured.get("peak_memory_bytes"),
            "wall_seconds": result.wall_seconds, "kernels": result.kernels}


def number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["jamba", "transformer"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--json-out", help="write the rows here as JSON")
    parser.add_argument("--kernels-only", action="store_true", help="only the kernel table")
    parser.add_argument("--no-kernels", action="store_true", help="skip the kernel table")
    parser.add_argument("--kernel-batch", type=int, default=32)
    parser.add_argument("--kernel-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=20, help="timed pairs per kernel")
    args = parser.parse_args()
    for name in ("steps", "batch_size", "d_model", "kernel_batch", "kernel_length", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    unknown = [name for name in args.presets if name not in arch_names()]
    if unknown:
        parser.error(f"--presets: unknown preset {unknown[0]!r} (valid: {', '.join(arch_names())})")

    kernels = [] if args.no_kernels else kernel_rows(args)
    if kernels:
        print_kernel_rows(kernels, args)
    rows = [] if args.kernels_only else preset_rows(args)
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump({"kernels": kernels, "presets": rows}, handle, indent=1)


def preset_rows(args: argparse.Namespace) -> list[dict]:
    """Each preset trained at the device's precision and in fp32; prints their table."""
    _, chosen = pick_device()
    if not torch.cuda.is_available():
        print("no CUDA device: both runs of each preset are fp32 on the CPU")
    rows = [measure(preset, precision, args)
            for preset in args.presets for precision in (chosen, FP32)]

    print(f"\nquick suite, {args.steps} steps per task, batch {args.batch_size}, "
          f"d_model {args.d_model}; device {rows[0]['device']}; kernels {rows[0]['kernels']}")
    print(f"{'preset':<13} {'precision':<11} {'train tok/s':>12} {'quality':>8} "
          f"{'decode ms/tok':>14} {'peak MiB':>9} {'wall s':>7}")
    for row in rows:
        peak = row["peak_memory_bytes"]
        print(f"{row['preset']:<13} {row['precision']:<11} "
              f"{number(row['train_tokens_per_s'], ',.0f'):>12} {number(row['quality'], '.3f'):>8} "
              f"{number(row['decode_ms_per_token'], '.2f'):>14} "
              f"{number(peak / 2**20 if peak else None, '.0f'):>9} {row['wall_seconds']:>7.1f}"
              + (f"  FAILED: {row['failure']}" if row["status"] != "ok" else ""))
    for fast, base in zip(rows[::2], rows[1::2]):
        if fast["train_tokens_per_s"] and base["train_tokens_per_s"]:
            ratio = fast["train_tokens_per_s"] / base["train_tokens_per_s"]
            print(f"{fast['preset']}: training tokens/s {fast['precision']} / {FP32} = "
                  f"{ratio:.2f}x")
    return rows

if __name__ == "__main__":
    main()
