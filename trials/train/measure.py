"""Measured costs beside the analytic ones: device, decoding latency, peak memory."""

from __future__ import annotations

import resource
import sys
import time

import torch

from trials.mixers.base import POSITION
from trials.model import HybridLM


def pick_device() -> tuple[str, str]:
    """(Lightning accelerator, precision): CUDA with bf16 mixed precision when there is a GPU,
    otherwise the CPU in fp32. One rule, recorded with every result."""
    if torch.cuda.is_available():
        return "gpu", ("bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed")
    return "cpu", "32-true"


def describe_device(accelerator: str) -> str:
    if accelerator == "gpu":
        return f"cuda:0 ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def reset_peak_memory(accelerator: str) -> None:
    if accelerator == "gpu":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_bytes(accelerator: str) -> int:
    """Peak CUDA memory allocated since the last reset; on the CPU, the process's peak
    resident set (a high-water mark over the whole process, not only this trial)."""
    if accelerator == "gpu":
        return int(torch.cuda.max_memory_allocated())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def at_position(state, position: int):
    """A model's fresh decoding state (`init_state`) moved to `position`: every position counter
    (the contract's "pos", trials.mixers.base) set to it, every tensor left as it is (zeros)."""
    if isinstance(state, dict):
        return {key: position if key == POSITION else at_position(value, position)
                for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(at_position(part, position) for part in state)
    return state


@torch.no_grad()
def decode_ms_per_token(model: HybridLM, context: int, device: torch.device,
                        timed_steps: int = 16, warm_steps: int = 4,
                        decode_prefix: bool = False) -> float:
    """Milliseconds per token of `step` decoding one sequence, timed over the last
    `timed_steps` tokens of a `context`-token decode (so attention pays for its full cache).

    The tokens before those are not decoded one by one (by default): the state starts at
    position context - timed_steps - warm_steps with its caches zeroed, and only `warm_steps`
    untimed steps (which fill what a mixer caches on its first step, such as Hyena's decoding
    filter) precede the timed ones. A step reads and writes the same cache entries whatever
    their values, so the time is that of a real prefix, for 20 steps instead of 128 at the
    default context (`benchmarks/decode_latency.py` times both ways, alternating).
    `decode_prefix=True` decodes every token from position 0 instead.
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.embedding.num_embeddings, (context,), generator=generator)
    tokens = tokens.to(device)
    timed_from = max(0, context - timed_steps)
    first = 0 if decode_prefix else max(0, timed_from - warm_steps)
    state = at_position(model.init_state(batch=1, max_len=context, device=device), first)
    started = 0.0
    for t in range(first, context):
        if t == timed_from:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
        _, state = model.step(tokens[t:t + 1], state)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    model.train(was_training)
    return (time.perf_counter() - started) * 1e3 / (context - timed_from)
