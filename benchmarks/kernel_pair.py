"""Two versions of the native CPU kernels, timed against each other in one process.

    python benchmarks/kernel_pair.py --baseline REF [--current REF] [--rounds 11]

`trials/ops/native/scan_kernels.cpp` at `--baseline` (a commit) and at `--current` (default:
this working tree) are each compiled into their own namespace of one program
(`kernel_pair.cpp`) with the flags the library is built with, and the forward and backward
passes of the selective scan, the SSD, RMSNorm, causal attention and the causal conv run on the
same data, the two versions in turn, the order swapped every round. Printed per pass: the last
round's times and the median (lowest, highest) of the per-round ratios baseline / current,
fp32, one thread, at the proxy models' shapes (batch 32; Mamba-1 at d_inner 128, d_state 16;
Mamba-2 at 4 heads of 32 with d_state 64, and 2 heads of 64 with d_state 128; RMSNorm over
2048 and 8192 rows of 64; attention with 4 heads of 16 at seq 64, 256 and 1024, batch 32
except 8 at 1024, causal and (at 256 and 1024) within `L`'s default window of 64; the conv
with silu over Mamba-1's 128 channels at seq 64 and Mamba-2's 256 at seq 256, width 4, and
width 3 as Hyena's).

Why a program of its own rather than torch: a change to one kernel moves a whole training
step by a few percent, less than this shared machine's drift between two runs; the kernels
alone, alternating in one process, separate 1.05x from noise. Both versions must have the
driver's C++ signatures for the ops: RMSNorm's took the fused residual add (null here) at
3f5fb24, so a baseline before it cannot be paired with `--ops rms_norm`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KERNELS = "trials/ops/native/scan_kernels.cpp"
DRIVER = Path(__file__).with_name("kernel_pair.cpp")
EXPORTS = "#define HNAS_EXPORT"  # where the extern "C" entry points begin
SHAPES = {  # op -> the driver's size arguments
    "scan": [(32, 64, 128, 16), (32, 256, 128, 16)],
    "ssd": [(32, 64, 4, 32, 64), (32, 64, 2, 64, 128), (32, 256, 4, 32, 64)],
    "rms_norm": [(2048, 64), (8192, 64)],
    "attention": [(32, 4, 64, 0), (32, 4, 256, 0), (8, 4, 1024, 0), (32, 4, 256, 64),
                  (8, 4, 1024, 64)],
    "conv": [(32, 64, 128, 4), (32, 256, 256, 4), (32, 256, 256, 3)],
}


def kernels_source(ref: str | None) -> str:
    """The kernels at commit `ref` (None: the working tree), without their entry points: two
    versions in one program would define each of them twice."""
    if ref is None:
        text = (ROOT / KERNELS).read_text()
    else:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{KERNELS}"],
                              capture_output=True, text=True, check=True).stdout
    cut = text.find(EXPORTS)
    if cut < 0:
        raise SystemExit(f"kernel_pair: no '{EXPORTS}' in {KERNELS} at {ref or 'the tree'}")
    return text[:cut]


def build(baseline: str, current: str | None, into: Path) -> Path:
    from trials.ops import native

    compiler = native._compiler()
    if compiler is None:
        raise SystemExit("kernel_pair: no C++ compiler ($CXX, c++, g++ or clang++)")
    (into / "baseline_kernels.cpp").write_text(kernels_source(baseline))
    (into / "current_kernels.cpp").write_text(kernels_source(current))
    program = into / "kernel_pair"
    flags = [flag for flag in native.FLAGS if flag not in ("-shared", "-fPIC")]
    subprocess.run([compiler, *flags, "-I", str(into), "-o", str(program), str(DRIVER)],
                   check=True)
    return program


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="a commit")
    parser.add_argument("--current", help="a commit (default: the working tree)")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--ops", nargs="+", choices=sorted(SHAPES), default=sorted(SHAPES))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hnas-kernel-pair-") as tmp:
        program = build(args.baseline, args.current, Path(tmp))
        print(f"baseline {args.baseline}, current {args.current or 'working tree'}; fp32, one "
              f"thread, {args.rounds} rounds; speed-up = baseline time / current time")
        print(f"{'op':9} {'sizes':18} {'pass':9} {'base ms':>8} {'cur ms':>8} "
              f"{'speed-up':>8} {'(lowest..highest)':>18}")
        for op in args.ops:
            for sizes in SHAPES[op]:
                done = subprocess.run([str(program), op, *map(str, sizes), str(args.rounds)],
                                      capture_output=True, text=True, check=True)
                for line in done.stdout.splitlines():
                    _, which, base_ms, cur_ms, median, low, high = line.split()
                    print(f"{op:9} {'x'.join(map(str, sizes)):18} {which:9} {float(base_ms):8.3f}"
                          f" {float(cur_ms):8.3f} {float(median):8.3f} "
                          f"{f'({float(low):.2f}..{float(high):.2f})':>18}", flush=True)


if __name__ == "__main__":
    main()
