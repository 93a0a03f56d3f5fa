"""Training-step time of every mixer on CPU, side by side with Hugging Face's PyTorch models.

    python benchmarks/mixers.py [--lengths 256 1024 4096] [--repeats N] [--quick]
                                [--only NAME ...] [--no-hf] [--threads N]
                                [--malloc-tunables] [--json-out FILE]

One step = forward + cross-entropy (+ the MoE auxiliary loss) + backward, batch 8, d_model 128,
vocab 64, fp32, train mode. Times are the median of the repeats after one warm-up step.

    ours     A*4, L*4 (window 128), M*4, M2*4, R*4, H*4, (M S)*2 (no FFN after M and M2, as in
             Mamba; a SwiGLU MLP otherwise), `R R L128 R` (Griffin's block cycle at 4 layers, for
             RecurrentGemma), and every preset architecture at d_model 128, its own depth
    hf       Llama, Mamba (its per-token loop and `use_mambapy=True`), Mamba-2, Jamba,
             RecurrentGemma, Zamba2, each set to the widths of the model of ours it faces
             (HF_NOTES says what could not be matched); only where `transformers` imports

Each model runs in its own spawned process, so a model that runs out of memory or hangs costs
that model only: a length whose step is estimated (from the previous length and the scaling so
far) at over 60 s, or whose memory is estimated past what is free, is skipped, and a process that
overruns its time limit is killed. The scored ratios (RATIOS with a target) are then timed again
with ours and HF alternating step by step in one process (at least PAIRED_ROUNDS rounds), so
that other load on the machine hits both alike. Every step also records the process's CPU time,
shown beside the wall-time ratios: on a machine shared with other work it is the steadier one. The printout has one table of step times, the linear-scaling check of the
recurrent and SSM mixers, and the HF/ours speed ratios with their targets.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

BATCH, D_MODEL, LAYERS, VOCAB = 8, 128, 4, 64
LENGTHS = (256, 1024, 4096)
SEED = 0
STEP_LIMIT_S = 60.0  # a length whose step would take longer is skipped
LINEAR_LIMIT = 4.5  # time(4096) / time(1024) allowed for a linear-time mixer
LINEAR_MIXERS = ("M*4", "M2*4", "R*4", "H*4")
#: (ours, HF, minimum HF/ours step-time ratio; None = shown, no target), at 256 and 1024
RATIOS: tuple[tuple[str, str, float | None], ...] = (
    ("M*4", "hf:Mamba (mambapy)", 2.0),
    ("M2*4", "hf:Mamba2", 1.5),
    ("R R L128 R", "hf:RecurrentGemma", 1.5),
    ("A*4", "hf:Llama", 1.0),
    ("M*4", "hf:Mamba (loop)", None),
    ("preset:jamba", "hf:Jamba (mambapy)", None),
    ("preset:zamba", "hf:Zamba2", None),
)
RATIO_LENGTHS = (256, 1024)
#: timed rounds (after the warm-up) of each paired re-timing, at least: a ratio scored against
#: a target is the median of this many alternating steps per model
PAIRED_ROUNDS = 7
#: --malloc-tunables: keep freed memory in glibc's heap instead of returning every block over
#: 32 MiB to the kernel, whose page faults on the next allocation dominate elementwise ops on
#: (8, 4096, >= 256) fp32 tensors on some (virtual) machines
MALLOC_TUNABLES = "glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=4294967296"


# -- the models -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Spec:
    name: str
    source: str  # "ours" or "hf"
    build: Callable[[], Any]  # module-level, so that a spawned process can unpickle it
    note: str = ""


def _ours(pattern: str, ffn: str = "mlp", window: int = 128, **dims: Any):
    from search_spaces import ArchConfig

    return ArchConfig.from_pattern(pattern, window=window, ffn=ffn, d_model=D_MODEL,
                                   vocab_size=VOCAB, **dims)


def _preset(name: str):
    from search_spaces import load_arch

    return load_arch(name, d_model=D_MODEL, vocab_size=VOCAB)


def our_specs() -> list[Spec]:
    from functools import partial

    from search_spaces import arch_names

    specs = [
        Spec("A*4", "ours", partial(_ours, "A*4")),
        Spec("L*4", "ours", partial(_ours, "L*4"), "window 128"),
        Spec("M*4", "ours", partial(_ours, "M*4", ffn="none")),
        Spec("M2*4", "ours", partial(_ours, "M2*4", ffn="none")),
        Spec("R*4", "ours", partial(_ours, "R*4")),
        Spec("H*4", "ours", partial(_ours, "H*4")),
        Spec("(M S)*2", "ours", partial(_ours, "(M S)*2")),
        # Griffin's (recurrent, recurrent, attention) cycle cut at 4 layers, MQA as RecurrentGemma
        Spec("R R L128 R", "ours", partial(_ours, "R R L128 R", n_kv_heads=1)),
    ]
    specs += [Spec(f"preset:{name}", "ours", partial(_preset, name)) for name in arch_names()
              if not name.endswith("_full")]  # the published sizes are for `hnas cost` only
    return specs


def _d_ff() -> int:
    from search_spaces.arch import default_d_ff

    return default_d_ff(D_MODEL)  # 344: our SwiGLU width, which every HF MLP is given


def _require_mambapy() -> None:
    """HF silently falls back to its per-token loop when `use_mambapy=True` finds no mambapy."""
    import importlib.util

    if importlib.util.find_spec("mambapy") is None:
        raise ImportError("use_mambapy=True needs mambapy (pip install mambapy)")


def _hf_llama(max_len: int):
    # vs A*4: identical structure (RoPE, SwiGLU of width d_ff, RMSNorm, tied embeddings, SDPA).
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, intermediate_size=_d_ff(),
        num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=max_len, rms_norm_eps=1e-5, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        attn_implementation="sdpa", use_cache=False))


def _hf_mamba(max_len: int, use_mambapy: bool):
    # vs M*4: identical widths (d_inner 256, d_state 16, d_conv 4, dt_rank 8), no MLP. Without
    # the CUDA kernels HF scans with a Python loop over time, or with mambapy's parallel pscan.
    from transformers import MambaConfig, MambaForCausalLM

    if use_mambapy:
        _require_mambapy()
    return MambaForCausalLM(MambaConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=LAYERS, state_size=16,
        expand=2, conv_kernel=4, time_step_rank=8, layer_norm_epsilon=1e-5,
        tie_word_embeddings=True, use_mambapy=use_mambapy, use_cache=False))


def _hf_mamba2(max_len: int):
    # vs M2*4: identical widths (8 heads of head_dim 32, d_state 64, 1 group, d_conv 4, gated
    # RMSNorm) and the same SSD chunk length 64 (HF's default is 256).
    from transformers import Mamba2Config, Mamba2ForCausalLM

    return Mamba2ForCausalLM(Mamba2Config(
        vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=LAYERS, num_heads=8,
        head_dim=32, state_size=64, n_groups=1, expand=2, conv_kernel=4, chunk_size=64,
        layer_norm_epsilon=1e-5, tie_word_embeddings=True, use_cache=False))


def _hf_jamba(max_len: int):
    # vs preset:jamba (8 layers, attention at offset 4 of 8, MoE every other layer from 1,
    # 4 experts top-2, 4 heads / 1 KV head, d_state 16, dt_rank 8, no RoPE, RMSNorms on dt, B,
    # C in the Mamba layers, as the preset); use_mambapy=True picks its parallel scan.
    from transformers import JambaConfig, JambaForCausalLM

    _require_mambapy()
    return JambaForCausalLM(JambaConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, intermediate_size=_d_ff(), num_hidden_layers=8,
        num_attention_heads=4, num_key_value_heads=1, num_experts=4, num_experts_per_tok=2,
        expert_layer_period=2, expert_layer_offset=1, attn_layer_period=8, attn_layer_offset=4,
        mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=8,
        use_mamba_kernels=False, use_mambapy=True, rms_norm_eps=1e-5,
        max_position_embeddings=max_len, tie_word_embeddings=True, output_router_logits=True,
        attn_implementation="sdpa", use_cache=False))


def _hf_recurrent_gemma(max_len: int):
    # vs `R R L128 R`: same block cycle, lru_width 128, 4 gate blocks, conv 4, window 128,
    # 4 heads / 1 KV head, full RoPE. Differs: a GeGLU MLP (HF halves intermediate_size, so it
    # gets 2*d_ff for the same width) where ours is SwiGLU, and a tanh soft cap on the logits.
    from transformers import RecurrentGemmaConfig, RecurrentGemmaForCausalLM

    return RecurrentGemmaForCausalLM(RecurrentGemmaConfig(
        vocab_size=VOCAB, hidden_size=D_MODEL, intermediate_size=2 * _d_ff(),
        num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=1,
        lru_width=D_MODEL, conv1d_width=4, attention_window_size=128,
        block_types=("recurrent", "recurrent", "attention"), partial_rotary_factor=1.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True, attn_implementation="sdpa",
        use_cache=False))


def _hf_zamba2(max_len: int):
    # vs preset:zamba ((M*6 S)*2): 12 SSM layers and 2 calls of one shared attention + MLP block
    # fed concat(hidden, embedding), head_dim 64, RoPE, each call with its own output linear.
    # Differs: Zamba2's SSM layers are Mamba-2 (8 heads of 32, d_state 16) where ours are
    # Mamba-1, a shared block runs *before* an SSM layer ("hybrid" = S then M), and its MLP is
    # GeLU, not SwiGLU.
    from transformers import Zamba2Config, Zamba2ForCausalLM

    layers = (["mamba"] * 5 + ["hybrid"]) * 2
    return Zamba2ForCausalLM(Zamba2Config(
        vocab_size=VOCAB, hidden_size=D_MODEL, num_hidden_layers=len(layers),
        layers_block_type=layers, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2,
        mamba_ngroups=1, n_mamba_heads=8, chunk_size=64, intermediate_size=_d_ff(),
        num_attention_heads=4, num_key_value_heads=4, num_mem_blocks=1,
        use_shared_attention_adapter=False, use_mem_rope=True, use_mamba_kernels=False,
        max_position_embeddings=max_len, rms_norm_eps=1e-5, tie_word_embeddings=True,
        attn_implementation="sdpa", use_cache=False))


HF_NOTES = (
    "Llama vs A*4: same structure (RoPE, SwiGLU d_ff 344, RMSNorm, tied embeddings, SDPA).",
    ("Mamba vs M*4: same widths (d_inner 256, d_state 16, d_conv 4, dt_rank 8, no MLP); "
     "'loop' is HF's default pure-PyTorch path (a Python loop over time), 'mambapy' sets "
     "use_mambapy=True (mambapy's parallel scan over the whole (B, L, D, N) state)."),
    "Mamba2 vs M2*4: same widths (8 heads x 32, d_state 64, 1 group, gated RMSNorm), chunk 64.",
    ("Jamba vs preset:jamba: same layout (8 layers, A at 4, MoE 4x top-2 at odd layers, "
     "GQA 4/1, no RoPE, dt/B/C RMSNorms in Mamba); use_mambapy=True."),
    ("RecurrentGemma vs R R L128 R: same cycle, lru_width 128, window 128, MQA, full RoPE; "
     "HF MLP is GeGLU (intermediate_size 688 = 2 x 344, halved inside), logits soft-capped."),
    ("Zamba2 vs preset:zamba: 12 SSM layers + 2 calls of one shared block (head_dim 64, RoPE); "
     "HF SSM layers are Mamba-2 (ours Mamba-1), its shared MLP is GeLU (ours SwiGLU)."),
)


def hf_specs() -> list[Spec]:
    from functools import partial

    return [
        Spec("hf:Llama", "hf", _hf_llama),
        Spec("hf:Mamba (loop)", "hf", partial(_hf_mamba, use_mambapy=False)),
        Spec("hf:Mamba (mambapy)", "hf", partial(_hf_mamba, use_mambapy=True)),
        Spec("hf:Mamba2", "hf", _hf_mamba2),
        Spec("hf:Jamba (mambapy)", "hf", _hf_jamba),
        Spec("hf:RecurrentGemma", "hf", _hf_recurrent_gemma),
        Spec("hf:Zamba2", "hf", _hf_zamba2),
    ]


def transformers_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


# -- measuring, each model in a spawned process -----------------------------------------------

def source_state() -> str:
    """The commit measured, and the source files changed on top of it (others may be
    editing the ops while a long run goes on: each model runs the code on disk when it starts)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                                capture_output=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--", "trials", "search_spaces"],
                                 cwd=root, text=True, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    paths = [line[3:] for line in changed.splitlines()]
    return commit + (f" + uncommitted changes in {', '.join(paths)}" if paths else "")


def _threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 1024)


def available_mb() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _build(spec: Spec, max_len: int):
    import torch

    torch.manual_seed(SEED)
    if spec.source == "ours":
        from trials.builder import build_model

        model = build_model(spec.build(), seed=SEED)
    else:
        from transformers.utils import logging

        logging.set_verbosity_error()  # the "falling back to PyTorch" notices: see HF_NOTES
        model = spec.build(max_len)
    return model.float().train()


def _step(model, tokens, source: str) -> None:
    """One training step: forward, next-token cross-entropy (+ MoE aux loss), backward."""
    import torch.nn.functional as F

    model.zero_grad(set_to_none=True)
    if source == "ours":
        out = model(tokens)
        logits, aux = out.logits, out.aux_loss
    else:
        out = model(input_ids=tokens, use_cache=False)
        logits, aux = out.logits, getattr(out, "aux_loss", None)
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                           tokens[:, 1:].reshape(-1))
    if aux is not None:
        loss = loss + 0.01 * aux
    loss.backward()


def _estimate(prev: list[tuple[int, float]], length: int) -> float | None:
    """Extrapolate a cost measured at earlier lengths to `length`, with the last observed
    exponent (at least 1: nothing here is sub-linear)."""
    if not prev:
        return None
    exponent = 1.0
    if len(prev) >= 2:
        (n0, v0), (n1, v1) = prev[-2], prev[-1]
        exponent = max(1.0, math.log(v1 / v0) / math.log(n1 / n0))
    n_last, v_last = prev[-1]
    return v_last * (length / n_last) ** exponent


def measure(spec: Spec, lengths: list[int], repeats: dict[int, int], threads: int,
            conn) -> None:
    """Child process: time `spec` at each length, sending one result dict per length."""
    import torch

    torch.set_num_threads(threads)
    try:
        model = _build(spec, max(lengths))
    except Exception as error:  # noqa: BLE001 - a config this version rejects: one line
        conn.send({"error": f"build failed: {type(error).__name__}: {str(error).splitlines()[0]}"})
        return
    params = sum(p.numel() for p in model.parameters())
    base_mb = _peak_rss_mb()
    times: list[tuple[int, float]] = []
    memory: list[tuple[int, float]] = []
    for length in lengths:
        row = {"length": length, "params": params}
        est_s = _estimate(times, length)
        est_mb = _estimate(memory, length)
        free = available_mb()
        if est_s is not None and est_s > STEP_LIMIT_S:
            conn.send({**row, "status": "skipped", "est_s": est_s,
                       "note": f"skipped (> {STEP_LIMIT_S:.0f} s/step est.)"})
            continue
        if est_mb is not None and free is not None and est_mb > 0.8 * free:
            conn.send({**row, "status": "skipped", "est_mb": base_mb + est_mb,
                       "note": f"skipped (~{(base_mb + est_mb) / 1024:.1f} GB est. > "
                               f"{0.8 * free / 1024:.1f} GB free)"})
            continue
        generator = torch.Generator().manual_seed(SEED + length)
        tokens = torch.randint(0, VOCAB, (BATCH, length), generator=generator)
        try:
            start = time.perf_counter()
            _step(model, tokens, spec.source)  # warm-up
            warm_s = time.perf_counter() - start
            samples, cpu = [], []
            # a warm-up over the limit is itself the measurement: do not repeat it
            for _ in range(repeats[length] if warm_s <= STEP_LIMIT_S else 0):
                wall_s, cpu_s = _timed_step(model, tokens, spec.source)
                samples.append(wall_s)
                cpu.append(cpu_s)
        except Exception as error:  # noqa: BLE001 - reported as this length's result
            conn.send({**row, "status": "error",
                       "note": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"})
            return
        if not samples:
            conn.send({**row, "status": "skipped", "warmup_s": warm_s,
                       "note": f"skipped (> {STEP_LIMIT_S:.0f} s/step, warm-up {warm_s:.0f} s)"})
            times.append((length, warm_s))
            continue
        median = statistics.median(samples)
        peak = _peak_rss_mb()
        times.append((length, median))
        memory.append((length, max(peak - base_mb, 1.0)))
        conn.send({**row, "status": "ok", "ms": 1e3 * median,
                   "ms_all": [round(1e3 * s, 2) for s in samples], "warmup_ms": 1e3 * warm_s,
                   "cpu_ms": 1e3 * statistics.median(cpu),
                   "tokens_per_s": BATCH * length / median, "peak_rss_mb": peak})


def _timed_step(model, tokens, source: str) -> tuple[float, float]:
    """One step's wall time and this process's CPU time (user + system, all threads): the CPU
    time does not count the time other processes held the cores, so it is the steadier of the
    two on a busy machine (with one thread it is the step's own work)."""
    wall, cpu = time.perf_counter(), time.process_time()
    _step(model, tokens, source)
    return time.perf_counter() - wall, time.process_time() - cpu


def _spec(name: str) -> Spec:
    specs = {spec.name: spec for spec in our_specs() + hf_specs()}
    return specs[name]


def measure_pair(ours: Spec, hf: Spec, lengths: list[int], repeats: dict[int, int],
                 threads: int, conn) -> None:
    """Child process: time two models in alternating steps (ABBA order) at each length, so
    that a change in the machine's load hits both alike. Sends one dict per length."""
    import torch

    torch.set_num_threads(threads)
    try:
        models = [_build(ours, max(lengths)), _build(hf, max(lengths))]
    except Exception as error:  # noqa: BLE001 - a config this version rejects: one line
        conn.send({"error": f"build failed: {type(error).__name__}: {str(error).splitlines()[0]}"})
        return
    sources = [ours.source, hf.source]
    for length in lengths:
        tokens = torch.randint(0, VOCAB, (BATCH, length),
                               generator=torch.Generator().manual_seed(SEED + length))
        samples: list[list[float]] = [[], []]
        cpu: list[list[float]] = [[], []]
        for r in range(repeats[length] + 1):  # the first round is the warm-up
            for i in (0, 1) if r % 2 else (1, 0):  # ABBA: neither model always goes first
                wall_s, cpu_s = _timed_step(models[i], tokens, sources[i])
                samples[i].append(wall_s)
                cpu[i].append(cpu_s)
        ours_s, hf_s = (statistics.median(s[1:]) for s in samples)
        ours_cpu, hf_cpu = (statistics.median(s[1:]) for s in cpu)
        conn.send({"length": length, "status": "ok", "ours_ms": 1e3 * ours_s,
                   "hf_ms": 1e3 * hf_s, "ratio": hf_s / ours_s, "ours_cpu_ms": 1e3 * ours_cpu,
                   "hf_cpu_ms": 1e3 * hf_cpu, "cpu_ratio": hf_cpu / ours_cpu})


def _child(task: str, names: list[str], lengths, repeats, threads, conn) -> None:
    try:
        if task == "single":
            measure(_spec(names[0]), lengths, repeats, threads, conn)
        else:
            measure_pair(_spec(names[0]), _spec(names[1]), lengths, repeats, threads, conn)
    except Exception:  # noqa: BLE001 - the parent prints it and moves on
        conn.send({"error": traceback.format_exc().strip().splitlines()[-1]})
    finally:
        conn.close()


def _run_child(task: str, names: list[str], lengths: list[int], repeats: dict[int, int],
               threads: int, steps_per_length: int, log: Callable[[str], None]) -> dict:
    """Run one measuring process; return {length: message} and "error" when it failed. A
    length that overruns its budget (steps at the step limit, plus slack) kills the process."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(task, names, lengths, repeats, threads, child))
    process.start()
    child.close()
    label = " / ".join(names)
    out: dict = {}
    pending = list(lengths)
    while pending:
        budget = STEP_LIMIT_S * (repeats[pending[0]] + 1) * steps_per_length * 1.5 + 120
        if not parent.poll(budget):
            process.kill()
            for length in pending:
                out[length] = {"length": length, "status": "timeout",
                               "note": f"killed after {budget:.0f} s"}
            log(f"  {label:<22} {pending[0]:>5}: killed after {budget:.0f} s")
            break
        try:
            message = parent.recv()
        except EOFError:  # the child died: out of memory, or a crash in native code
            process.join(5)
            for length in pending:
                out[length] = {"length": length, "status": "error",
                               "note": f"process died (exit {process.exitcode})"}
            log(f"  {label:<22} {pending[0]:>5}: process died (exit {process.exitcode})")
            break
        if "error" in message:
            out["error"] = message["error"]
            log(f"  {label:<22} {message['error']}")
            break
        out[message["length"]] = message
        pending.remove(message["length"])
        if message["status"] != "ok":
            shown = message.get("note", message["status"])
        elif task == "single":
            shown = f"{message['ms']:10.1f} ms/step"
        else:
            shown = (f"{message['ours_ms']:10.1f} / {message['hf_ms']:.1f} ms/step (paired), "
                     f"ratio {message['ratio']:.2f}, CPU-time ratio {message['cpu_ratio']:.2f}")
        log(f"  {label:<22} {message['length']:>5}: {shown}")
    process.join(10)
    if process.is_alive():
        process.kill()
    return out


@dataclass
class Result:
    spec: Spec
    rows: dict[int, dict] = field(default_factory=dict)
    error: str | None = None

    def ms(self, length: int, key: str = "ms") -> float | None:
        row = self.rows.get(length)
        return row.get(key) if row and row.get("status") == "ok" else None


def run_spec(spec: Spec, lengths: list[int], repeats: dict[int, int], threads: int,
             log: Callable[[str], None]) -> Result:
    """Time one model at every length in its own process."""
    out = _run_child("single", [spec.name], lengths, repeats, threads, 1, log)
    return Result(spec, {n: row for n, row in out.items() if n != "error"}, out.get("error"))


def run_pair(ours: str, hf: str, lengths: list[int], repeats: dict[int, int], threads: int,
             log: Callable[[str], None]) -> dict:
    """Time `ours` and `hf` in alternating steps at each length: {length: message}."""
    return _run_child("pair", [ours, hf], lengths, repeats, threads, 2, log)


# -- analysis and printing -----------------------------------------------------------------

def exponents(result: Result, lengths: list[int]) -> list[float | None]:
    """log(t_i+1 / t_i) / log(N_i+1 / N_i) between consecutive lengths."""
    out = []
    for n0, n1 in pairwise(lengths):
        t0, t1 = result.ms(n0), result.ms(n1)
        out.append(math.log(t1 / t0) / math.log(n1 / n0) if t0 and t1 else None)
    return out


def scaling_rows(results: dict[str, Result]) -> list[dict]:
    rows = []
    for name in LINEAR_MIXERS:
        result = results.get(name)
        t1024, t4096 = (result.ms(1024), result.ms(4096)) if result else (None, None)
        ratio = t4096 / t1024 if t1024 and t4096 else None
        c1024, c4096 = (result.ms(1024, "cpu_ms"), result.ms(4096, "cpu_ms")) if result \
            else (None, None)
        rows.append({"model": name, "t4096_over_t1024": ratio, "limit": LINEAR_LIMIT,
                     "cpu_t4096_over_t1024": c4096 / c1024 if c1024 and c4096 else None,
                     "exponent": math.log(ratio) / math.log(4) if ratio else None,
                     "verdict": "n/a" if ratio is None else
                     ("PASS" if ratio <= LINEAR_LIMIT else "FAIL")})
    return rows


def ratio_rows(results: dict[str, Result], paired: dict[tuple[str, str], dict],
               lengths: list[int]) -> list[dict]:
    """HF/ours step-time ratios: from the paired (alternating) runs where there is one, else
    from the main table (shown as information, never scored)."""
    rows = []
    for ours, hf, target in RATIOS:
        if ours not in results or hf not in results:
            continue
        for length in RATIO_LENGTHS + tuple(n for n in lengths if n not in RATIO_LENGTHS):
            if length not in lengths:
                continue
            pair = paired.get((ours, hf), {}).get(length)
            if pair and pair.get("status") == "ok":
                t_ours, t_hf, how = pair["ours_ms"], pair["hf_ms"], "paired"
                cpu_ratio = pair["cpu_ratio"]
            else:
                t_ours, t_hf, how = results[ours].ms(length), results[hf].ms(length), "table"
                c_ours, c_hf = results[ours].ms(length, "cpu_ms"), results[hf].ms(length, "cpu_ms")
                cpu_ratio = c_hf / c_ours if c_ours and c_hf else None
            ratio = t_hf / t_ours if t_ours and t_hf else None
            scored = target is not None and length in RATIO_LENGTHS and how == "paired"
            verdict = "n/a" if ratio is None else \
                ("PASS" if ratio >= target else "MISS") if scored else "info"
            rows.append({"ours": ours, "hf": hf, "length": length, "ours_ms": t_ours,
                         "hf_ms": t_hf, "ratio": ratio, "cpu_ratio": cpu_ratio,
                         "target": target if scored else None,
                         "verdict": verdict, "timing": how})
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _cell(result: Result, length: int) -> tuple[str, str]:
    row = result.rows.get(length)
    if result.error:
        return "error", "-"
    if row is None:
        return "-", "-"
    if row["status"] != "ok":
        return row.get("note", row["status"]), "-"
    return f"{row['ms']:.1f}", f"{row['tokens_per_s'] / 1e3:.1f}"


def print_report(console, results: dict[str, Result], lengths: list[int], scaling, ratios,
                 notes: list[str]) -> None:
    from rich.table import Table

    table = Table(title=f"Training step (fwd + loss + bwd), batch {BATCH}, d_model {D_MODEL}, "
                        f"vocab {VOCAB}, fp32, CPU: ms/step (median) and k tokens/s")
    table.add_column("model")
    table.add_column("params", justify="right")
    for n in lengths:
        table.add_column(f"ms @{n}", justify="right")
    for n in lengths:
        table.add_column(f"ktok/s @{n}", justify="right")
    for n0, n1 in pairwise(lengths):
        table.add_column(f"exp {n0}->{n1}", justify="right")
    if 1024 in lengths and 4096 in lengths:
        table.add_column("t4096/t1024", justify="right")
    previous_source = None
    for name, result in results.items():
        if previous_source is not None and result.spec.source != previous_source:
            table.add_section()
        previous_source = result.spec.source
        params = next((r["params"] for r in result.rows.values() if "params" in r), None)
        cells = [_cell(result, n) for n in lengths]
        row = [name + (f" ({result.spec.note})" if result.spec.note else ""),
               _fmt(params / 1e3 if params else None, ".0f") + ("k" if params else ""),
               *(c[0] for c in cells), *(c[1] for c in cells),
               *(_fmt(e, ".2f") for e in exponents(result, lengths))]
        if 1024 in lengths and 4096 in lengths:
            t1, t4 = result.ms(1024), result.ms(4096)
            row.append(_fmt(t4 / t1 if t1 and t4 else None, ".2f"))
        if result.error:
            row[2] = result.error[:90]
        table.add_row(*row)
    console.print(table)

    if scaling:
        table = Table(title=f"Linear scaling: time(4096)/time(1024) <= {LINEAR_LIMIT} (wall "
                            "time; the CPU-time ratio beside it, for a busy machine)")
        for column in ("mixer", "t4096/t1024", "exponent", "verdict", "CPU t4096/t1024"):
            table.add_column(column, justify="left" if column == "mixer" else "right")
        for row in scaling:
            table.add_row(row["model"], _fmt(row["t4096_over_t1024"], ".2f"),
                          _fmt(row["exponent"], ".2f"), row["verdict"],
                          _fmt(row["cpu_t4096_over_t1024"], ".2f"))
        console.print(table)

    if ratios:
        table = Table(title="Speed ratio = HF step time / ours (higher: ours faster); 'paired' "
                            "times alternate ours and HF step by step in one process")
        for column in ("ours", "HF", "N", "timing", "ours ms", "HF ms", "ratio", "target",
                       "verdict", "CPU ratio"):
            table.add_column(column, justify="left" if column in ("ours", "HF") else "right")
        for row in ratios:
            table.add_row(row["ours"], row["hf"], str(row["length"]), row["timing"],
                          _fmt(row["ours_ms"], ".1f"), _fmt(row["hf_ms"], ".1f"),
                          _fmt(row["ratio"], ".2f"),
                          _fmt(row["target"], ">.1f") if row["target"] else "-", row["verdict"],
                          _fmt(row["cpu_ratio"], ".2f"))
        console.print(table)
    for note in notes:
        console.print(f"- {note}", highlight=False, markup=False)


# -- entry point ---------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=None,
                        help=f"sequence lengths (default {' '.join(map(str, LENGTHS))})")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed steps per length after the warm-up (default 3, 2 at 4096; "
                             "2 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="lengths 256 and 1024 only, 2 repeats")
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME",
                        help="run only models whose name contains one of these strings")
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face models")
    parser.add_argument("--malloc-tunables", action="store_true",
                        help=f"run the models with GLIBC_TUNABLES={MALLOC_TUNABLES}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: every core this process may use)")
    parser.add_argument("--json-out", default=None, metavar="FILE",
                        help="where to write the JSON rows (default: a file in the temp dir)")
    args = parser.parse_args(argv)
    if args.lengths is None:
        args.lengths = [256, 1024] if args.quick else list(LENGTHS)
    if any(n < 2 for n in args.lengths):
        parser.error(f"--lengths: every length must be >= 2, got {args.lengths}")
    args.lengths = sorted(set(args.lengths))
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    args = parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 250)
    repeats = {n: args.repeats or (2 if args.quick or n >= 4096 else 3) for n in args.lengths}

    import torch

    threads = args.threads or _threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    hf_version = None if args.no_hf else transformers_version()
    source = source_state()
    if args.malloc_tunables:  # read by glibc when each spawned model process starts
        previous = os.environ.get("GLIBC_TUNABLES")
        os.environ["GLIBC_TUNABLES"] = f"{previous}:{MALLOC_TUNABLES}" if previous else \
            MALLOC_TUNABLES
    specs = our_specs()
    notes = []
    if hf_version is not None:
        specs += hf_specs()
        notes += list(HF_NOTES)
    elif not args.no_hf:
        notes.append("transformers is not installed (pip install -e '.[hf]'): HF baselines and "
                     "ratios are skipped.")
    if args.only:
        specs = [s for s in specs if any(key in s.name for key in args.only)]
    console.print(f"torch {torch.__version__}, transformers {hf_version or 'not installed'}, "
                  f"{threads} threads, {platform.processor() or platform.machine()}, "
                  f"lengths {args.lengths}, repeats {repeats}, seed {SEED}, load {load:.2f}",
                  markup=False)
    if threads > 1 and load > 0.5:
        console.print(f"warning: the CPUs are already busy (1-min load {load:.2f}); "
                      f"{threads} threads contending with other processes can run many times "
                      "slower than one thread and make the times noisy: --threads 1 is steadier")
    console.print(f"source: {source}", highlight=False, markup=False)
    if os.environ.get("GLIBC_TUNABLES"):
        console.print(f"GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']}", highlight=False,
                      markup=False)
    if hf_version is None and not args.no_hf:
        console.print(notes[-1], markup=False)

    results: dict[str, Result] = {}
    started = time.perf_counter()
    def log(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    for spec in specs:
        results[spec.name] = run_spec(spec, args.lengths, repeats, threads, log)
    # the scored ratios again, ours and HF in alternating steps, where both ran above
    paired: dict[tuple[str, str], dict] = {}
    paired_repeats = {n: max(r, PAIRED_ROUNDS) for n, r in repeats.items()}
    for ours, hf, target in RATIOS if hf_version else ():
        both = [n for n in RATIO_LENGTHS if n in args.lengths and ours in results
                and hf in results and results[ours].ms(n) and results[hf].ms(n)]
        if target is not None and both:
            paired[ours, hf] = run_pair(ours, hf, both, paired_repeats, threads, log)
    elapsed = time.perf_counter() - started

    scaling = scaling_rows(results) if {1024, 4096} <= set(args.lengths) else []
    scaling = [row for row in scaling if row["model"] in results]
    ratios = ratio_rows(results, paired, args.lengths) if hf_version else []
    console.print()
    print_report(console, results, args.lengths, scaling, ratios, notes)
    console.print(f"total {elapsed:.0f} s")

    path = args.json_out or os.path.join(tempfile.gettempdir(), "hnas-bench-mixers.json")
    meta = {"torch": torch.__version__, "transformers": hf_version, "threads": threads,
            "batch": BATCH, "d_model": D_MODEL, "vocab": VOCAB, "seed": SEED,
            "lengths": args.lengths, "repeats": repeats, "paired_rounds": PAIRED_ROUNDS,
            "step_limit_s": STEP_LIMIT_S,
            "machine": platform.platform(), "elapsed_s": elapsed, "load_at_start": load,
            "source": source, "glibc_tunables": os.environ.get("GLIBC_TUNABLES")}
    steps = [{"model": name, "source": r.spec.source, "note": r.spec.note, "error": r.error,
              **row} for name, r in results.items() for row in
             (r.rows.values() if r.rows else [{}])]
    with open(path, "w") as f:
        json.dump({"meta": meta, "steps": steps, "scaling": scaling, "ratios": ratios,
                   "notes": notes}, f, indent=1)
    console.print(f"rows written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
