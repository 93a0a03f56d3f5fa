"""run_trial: build a candidate, train it briefly on every task of a suite, score it, cost it.

Failure is data: a NaN loss, an out-of-memory error or any other exception inside a candidate
ends that candidate with a failed TrialResult that says why; the caller never sees it raise.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from datetime import timedelta

import lightning.pytorch as pl
import torch

from search_spaces import ArchConfig
from search_spaces.cost import estimate
from trials.builder import build_model
from trials.ops.dispatch import recording
from trials.tasks import Suite, TaskData, load_suite, merge_scores, score
from trials.train.allocator import keep_freed_memory
from trials.train.budget import Budget
from trials.train.measure import (
    decode_ms_per_token,
    describe_device,
    peak_memory_bytes,
    pick_device,
    reset_peak_memory,
)
from trials.train.module import NonFiniteLoss, ProxyLM, TaskDataModule, TrainingState
from trials.train.result import FAILED, TaskResult, TrialResult
from trials.train.task_processes import (TaskOutcome, note_kernels, run_in_children,
                                         task_processes)
from trials.train.threads import warn_if_many_threads



def quiet_lightning() -> None:
    """The caller draws progress: silence Lightning's banners and data-loader advice."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*GPU available.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def describe_failure(error: BaseException) -> str:
    """One line: `nan_loss at step k`, `oom`, or `Type: message`."""
    if isinstance(error, NonFiniteLoss):
        return str(error)
    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)) or \
            "out of memory" in str(error).lower():
        return "oom"
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _task_arch(arch: ArchConfig, vocab_size: int) -> ArchConfig:
    """The candidate with the task's vocabulary (only the embedding and head change)."""
    return ArchConfig.from_dict({**arch.to_dict(), "vocab_size": vocab_size})


@torch.no_grad()
def evaluate(model, test: TaskData, batch_size: int, device: torch.device) -> dict[str, float]:
    was_training = model.training
    model.eval()
    parts = []
    for start in range(0, len(test), batch_size):
        batch = test[start:start + batch_size]
        logits = model(batch.inputs.to(device)).logits.float()
        parts.append(score(logits, batch))
    model.train(was_training)
    return merge_scores(parts)


def train_task(arch: ArchConfig, train: TaskData, test: TaskData, budget: Budget, seed: int,
               accelerator: str, precision: str, name: str,
               resume: TrainingState | None = None) -> tuple[TaskResult, object]:
    """Train one fresh model on one task, or continue the run `resume` stopped (a wsd budget
    only: no other schedule agrees with a longer run of itself); returns its result and the
    trained model. Under a wsd budget the result's `checkpoints` hold the state where the
    decay began."""
    start = budget.decay_start
    if resume is not None and (start is None or not resume.step < budget.steps):
        raise ValueError(f"{name}: a run can continue only under a wsd budget longer than its "
                         f"{resume.step} steps (got {budget.schedule}, {budget.steps} steps)")
    model = build_model(_task_arch(arch, train.vocab_size), seed=seed)
    if resume is not None:
        model.load_state_dict(resume.model)
    module = ProxyLM(model, budget, train.vocab_size, train.token_unit, resume=resume,
                     save_at=start)
    data = TaskDataModule(train, test, budget.batch_size, seed,
                          start=None if start is None else (resume.batches if resume else 0))
    trainer = pl.Trainer(
        accelerator=accelerator, devices=1, precision=precision,
        max_steps=budget.steps - module.offset if budget.steps is not None else -1,
        max_epochs=-1,
        max_time=timedelta(seconds=budget.seconds) if budget.seconds else None,
        val_check_interval=budget.curve_every, check_val_every_n_epoch=None,
        limit_val_batches=budget.eval_batches, num_sanity_val_steps=0,
        gradient_clip_val=budget.grad_clip, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=None)
    result = TaskResult(name=name, lr=budget.lr)
    try:
        trainer.fit(module, datamodule=data)
    finally:
        result.steps = module.step
        result.curve = module.curve
        result.train_seconds = module.train_seconds
        result.tokens_per_s = (module.train_tokens / module.train_seconds
                               if module.train_seconds else 0.0)
    last = module.last_validation
    if last is not None and last[0] == result.steps and \
            last[1]["n_scored"] == int(test.score_mask.sum()):
        result.metrics = last[1]  # the final curve point already scored the whole test set
    else:
        device = next(model.parameters()).device
        result.metrics = evaluate(model, test, max(budget.batch_size, 64), device)
    if module.saved is not None:
        result.checkpoints[budget.lr] = module.saved
    return result, model


def sweep_task(arch: ArchConfig, train: TaskData, test: TaskData, budget: Budget, seed: int,
               accelerator: str, precision: str, name: str,
               resume: dict[float, TrainingState] | None = None) -> tuple[TaskResult, object]:
    """Train one fresh model per learning rate of `budget` (or continue each rate's run from
    `resume`, by rate); keep the best run, with every rate's checkpoint.

    The best run has the highest test accuracy, then the lowest test loss, then the earliest
    rate in the sweep. As in MAD the choice is made on the test set: the score is the best of a
    few runs, an optimism every candidate gets. A NaN loss at one rate is that rate's failure,
    recorded in the sweep (the usual fate of a too-high rate); only when every rate fails does
    the task fail. Any other error (out of memory, a bug) ends the sweep at once: another rate
    would not avoid it.
    """
    resume = resume or {}
    if len(budget.rates) == 1:
        return train_task(arch, train, test, budget, seed, accelerator, precision, name,
                          resume.get(budget.lr))
    best, best_model, sweep, first_failure = None, None, [], None
    checkpoints = {}
    seconds = tokens = 0.0  # over every finished run: a sweep costs all of them
    for rate in budget.rates:
        try:
            run, model = train_task(arch, train, test, budget.at_rate(rate), seed, accelerator,
                                    precision, name, resume.get(rate))
        except NonFiniteLoss as error:
            first_failure = first_failure or error
            sweep.append({"lr": rate, "accuracy": None, "loss": None, "steps": error.step,
                          "failure": str(error)})
            continue
        sweep.append({"lr": rate, "accuracy": run.metrics["accuracy"],
                      "loss": run.metrics["loss"], "steps": run.steps, "failure": None})
        seconds += run.train_seconds
        tokens += run.train_seconds * run.tokens_per_s
        checkpoints.update(run.checkpoints)
        if best is None or run_rank(run.metrics) > run_rank(best.metrics):
            best, best_model = run, model
    if best is None:
        raise first_failure
    best.train_seconds, best.tokens_per_s = seconds, (tokens / seconds if seconds else 0.0)
    best.sweep = sweep
    best.checkpoints = checkpoints
    return best, best_model


def run_rank(metrics: dict[str, float]) -> tuple[float, float]:
    """Orders the runs of one task at different learning rates: higher test accuracy first,
    then lower test loss (what a sweep keeps, and how benchmarks pick a rate from saved rows)."""
    return metrics["accuracy"], -metrics.get("loss", float("inf"))


def _train_entry(arch: ArchConfig, suite: Suite, name: str, budget: Budget, seed: int,
                 accelerator: str, precision: str,
                 resume: dict[float, TrainingState] | None) -> tuple[TaskResult, object]:
    train, test = suite.data(name)
    return sweep_task(arch, train, test, budget, seed, accelerator, precision, name, resume)


def _decode_ms(model, budget: Budget) -> float:
    return decode_ms_per_token(model, budget.decode_context, next(model.parameters()).device)


def _entry_in_child(arch: ArchConfig, suite: Suite, name: str, budget: Budget, seed: int,
                    precision: str, resume: dict[float, TrainingState] | None,
                    decodes: bool) -> TaskOutcome:
    """One task in a forked child of `run_trial` (CPU only), as `_train_entry` runs it there."""
    with recording() as ran:
        result, model = _train_entry(arch, suite, name, budget, seed, "cpu", precision, resume)
        decode = _decode_ms(model, budget) if decodes else None
    return TaskOutcome(result, ran.by_op, peak_memory_bytes("cpu"), decode)


def _keep(result: TrialResult, name: str, task_result: TaskResult) -> None:
    result.tasks[name] = task_result
    if task_result.checkpoints:
        result.checkpoints[name] = task_result.checkpoints


def _tasks_in_turn(result: TrialResult, arch: ArchConfig, suite: Suite, budget: Budget,
                   seed: int, accelerator: str, precision: str,
                   resume: dict[str, dict[float, TrainingState]]) -> tuple[int, float | None]:
    """Train the suite's tasks one after another into `result`; (peak memory, decode ms)."""
    model = None
    for entry in suite:
        task_result, model = _train_entry(arch, suite, entry.name, budget, seed, accelerator,
                                          precision, resume.get(entry.name))
        _keep(result, entry.name, task_result)
    decode = _decode_ms(model, budget) if budget.decode_context and model is not None else None
    return peak_memory_bytes(accelerator), decode


def _tasks_side_by_side(result: TrialResult, arch: ArchConfig, suite: Suite, budget: Budget,
                        seed: int, precision: str, resume: dict[str, dict[float, TrainingState]],
                        processes: int) -> tuple[int, float | None]:
    """`_tasks_in_turn` with the tasks in `processes` forked children (CPU only); the last
    task's child times decoding, as its model is the one timed in turn."""
    names = [entry.name for entry in suite]
    jobs = [functools.partial(_entry_in_child, arch, suite, name, budget, seed, precision,
                              resume.get(name), bool(budget.decode_context) and name == names[-1])
            for name in names]
    peak, decode = 0, None
    try:
        for index, outcome in run_in_children(jobs, processes):
            note_kernels(outcome.kernels)
            _keep(result, names[index], outcome.result)
            peak = max(peak, outcome.peak_memory_bytes)
            if outcome.decode_ms_per_token is not None:
                decode = outcome.decode_ms_per_token
    finally:  # in the suite's order, as in turn
        result.tasks = {name: result.tasks[name] for name in names if name in result.tasks}
    return peak, decode


def run_trial(arch: ArchConfig, suite: Suite | str = "quick", budget: Budget | None = None,
              seed: int = 0, precision: str | None = None,
              resume: dict[str, dict[float, TrainingState]] | None = None,
              processes: int | None = 1) -> TrialResult:
    """Evaluate `arch` on every task of `suite` (one fresh model per task, as MAD does; one per
    task and learning rate when the budget sweeps rates).

    Under a wsd budget the result's `checkpoints` ({task: {rate: TrainingState}}) hold every
    run's state where its decay began, and `resume` (the checkpoints of a shorter wsd run of
    the same candidate) continues each run from there instead of training it afresh.

    The device and precision follow `pick_device` (bf16 mixed on a GPU, fp32 on the CPU);
    `precision`, a Lightning precision string, overrides the latter, for comparisons such as
    bf16 against fp32 on one GPU.

    `processes` > 1 trains up to that many tasks at once on the CPU, one forked process each,
    and None one per usable core (`trials.train.task_processes`: what `hnas train` does on a
    machine it has to itself); the result is the same as in turn. Ignored on a GPU and wherever
    forking is not safe.
    """
    started = time.perf_counter()
    quiet_lightning()
    budget = budget or Budget()
    result = TrialResult(pattern=arch.pattern, fingerprint=arch.fingerprint(),
                         suite=suite if isinstance(suite, str) else suite.name, seed=seed,
                         budget=budget.to_dict())
    accelerator, chosen = pick_device()
    precision = precision or chosen
    result.device, result.precision = describe_device(accelerator), precision
    if accelerator == "cpu":
        warn_if_many_threads()
        keep_freed_memory()
    with recording() as ran:  # the kernels that training and evaluation actually ran
        try:
            suite = load_suite(suite) if isinstance(suite, str) else suite
            result.suite = suite.name
            context = max(entry.task.seq_len for entry in suite)
            result.analytic = {key: value for key, value in
                               estimate(arch, context=context, dtype="bf16").to_dict().items()
                               if key != "breakdown"}
            reset_peak_memory(accelerator)
            side_by_side = task_processes(len(suite.entries), processes) \
                if accelerator == "cpu" else 1
            if side_by_side > 1:
                peak, decode = _tasks_side_by_side(result, arch, suite, budget, seed, precision,
                                                   resume or {}, side_by_side)
            else:
                peak, decode = _tasks_in_turn(result, arch, suite, budget, seed, accelerator,
                                              precision, resume or {})
            result.quality = suite.quality({name: task.metrics
                                            for name, task in result.tasks.items()})
            tokens = sum(t.tokens_per_s * t.train_seconds for t in result.tasks.values())
            seconds = sum(t.train_seconds for t in result.tasks.values())
            result.measured["train_tokens_per_s"] = tokens / seconds if seconds else 0.0
            result.measured["peak_memory_bytes"] = peak
            if decode is not None:
                result.measured["decode_ms_per_token"] = decode
                result.measured["decode_context"] = budget.decode_context
        except Exception as error:  # noqa: BLE001 - every failure becomes data (module doc)
            result.status, result.failure = FAILED, describe_failure(error)
            if isinstance(error, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
    result.kernels = ran.kernels()
    result.wall_seconds = time.perf_counter() - started
    return result
