"""The `quick` suite on a GPU in bf16: training tokens/s of two presets, against fp32 on the same
device (the baseline), as a ratio; with quality and decode latency beside them.

    python benchmarks/gpu_quick.py                                  # jamba and transformer
    python benchmarks/gpu_quick.py --presets griffin mamba2 --steps 300 --json-out rows.json

Every preset is trained twice through `run_trial`, once at the precision the device rule picks
(bf16 mixed on a GPU that supports it) and once in fp32 ("32-true"), same seed, same data. On a
machine without CUDA both runs are fp32 on the CPU and the script says so: it still runs end to
end, which is how it is checked without a GPU. What it measures on a GPU is the pure-PyTorch
path (`run_trial`'s `kernels`): no fused kernel exists yet, so the ratio is what autocast buys.
"""

from __future__ import annotations

import argparse
import json

import torch

from search_spaces import arch_names, load_arch
from trials.train import Budget, run_trial
from trials.train.measure import pick_device

FP32 = "32-true"


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
    args = parser.parse_args()
    unknown = [name for name in args.presets if name not in arch_names()]
    if unknown:
        parser.error(f"--presets: unknown preset {unknown[0]!r} (valid: {', '.join(arch_names())})")

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
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
