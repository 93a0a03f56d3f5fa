"""Measured costs beside the analytic ones: device, decoding latency, peak memory."""

from __future__ import annotations

import resource
import sys
import time

import torch

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


@torch.no_grad()
def decode_ms_per_token(model: HybridLM, context: int, device: torch.device,
                        timed_steps: int = 16) -> float:
    """Milliseconds per token of `step` decoding one sequence, timed over the last
    `timed_steps` tokens of a `context`-token decode (so attention pays for its full cache)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.embedding.num_embeddings, (context,), generator=generator)
    tokens = tokens.to(device)
    state = model.init_state(batch=1, max_len=context, device=device)
    timed_from = max(0, context - timed_steps)
    started = 0.0
    for t in range(context):
        if t == timed_from:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            started = time.perf_counter()
        _, state = model.step(tokens[t:t + 1], state)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    model.train(was_training)
    return (time.perf_counter() - started) * 1e3 / (context - timed_from)
