"""The memory rule of the parallel forms: no single temporary over TEMP_BYTES where the
algorithm leaves the choice (a recurrent mixer can run over segments of the sequence, carrying
its state; a depthwise FFT conv can run over blocks of the batch).

Why a byte budget and not just "as large as fits": glibc serves every allocation of 32 MiB or
more (its largest mmap threshold) with a fresh mapping and unmaps it again on free, so each such
tensor is page-faulted in afresh, and on CPU that costs more than the elementwise op filling it.
A Mamba-2 training step at 4096 tokens (batch 8) spent as long in page faults as in compute,
7x its time at 1024. Tensors below the threshold come from the heap and are reused.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

import torch
from torch import Tensor

TEMP_BYTES = 24 * 2**20
Out = TypeVar("Out")


def blocks(length: int, bytes_per_step: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Cut 0..length into (start, end) blocks of whole `multiple`s (the last may be shorter)
    such that `bytes_per_step` bytes per position fit in TEMP_BYTES; never shorter than
    `multiple`."""
    fit = TEMP_BYTES // max(1, bytes_per_step)
    size = max(multiple, fit // multiple * multiple)
    return [(start, min(start + size, length)) for start in range(0, length, size)]


def over_segments(x: Tensor, bytes_per_step: int,
                  segment: Callable[[Tensor, Any], tuple[Out, Any]],
                  multiple: int = 1) -> list[Out]:
    """A recurrent mixer's forward over segments of the sequence, within the memory rule.

    x: (B, L, ...) is cut along L by `blocks(L, bytes_per_step, multiple)`; `segment(x_part,
    carried) -> (output, carried)` runs on each in order, `carried` being what the previous
    segment returned (None for the first: a zero state). Returns the outputs in order (join
    tensors with `join_segments`).

        x[:, 0:s1] -> segment -> out_0, state_1
        x[:, s1:s2], state_1 -> segment -> out_1, state_2  ...
    """
    carried = None
    outputs = []
    for start, end in blocks(x.shape[1], bytes_per_step, multiple):
        output, carried = segment(x[:, start:end], carried)
        outputs.append(output)
    return outputs


def join_segments(parts: list[Tensor]) -> Tensor:
    """Segment outputs (B, l, ...) as one sequence (B, L, ...); a lone segment uncopied."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
