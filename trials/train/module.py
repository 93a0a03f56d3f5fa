"""The LightningModule that trains a HybridLM on one proxy task, and its data module."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch.utils.data import DataLoader, Sampler, TensorDataset

from trials.model import HybridLM
from trials.tasks import TaskData, masked_cross_entropy, merge_scores, score
from trials.train.budget import Budget


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the candidate stops there."""

    def __init__(self, step: int) -> None:
        super().__init__(f"nan_loss at step {step}")
        self.step = step

    def __reduce__(self):  # pickled by its step (it comes back from a task's child process)
        return type(self), (self.step,)


@dataclass
class TrainingState:
    """Where one run (one task, one learning rate) stood after `step` optimiser steps: enough to
    continue it exactly. Tensors are on the CPU. The training data's position is `batches`, the
    batches drawn so far: under a step-indexed stream (`StepBatches`) the next batch is a
    function of it alone."""

    step: int
    batches: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]  # torch's CPU generator state, and each CUDA device's

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "batches": self.batches, "model": self.model,
                "optimizer": self.optimizer, "rng": self.rng}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainingState":
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def rng_state() -> dict[str, Any]:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["cpu"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_cpu(value: Any) -> Any:
    """A copy of a (nested) state with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: to_cpu(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(item) for item in value)
    return copy.deepcopy(value)


def adamw(model: torch.nn.Module, lr: float, weight_decay: float,
          allow_fused: bool = True) -> torch.optim.AdamW:
    """The proxy's optimiser. Weight decay on matrices only: norms, biases and the SSMs' A_log /
    D / dt bias keep their scale (as Mamba and Griffin train them).

    torch's fused AdamW (one kernel per parameter, on the CPU too) where `allow_fused` and every
    parameter is a floating tensor on one device: the same update up to rounding, at a third of
    the default per-tensor loop's time on a CPU jamba step (2.4 ms against 7.3 ms, 134 tensors).
    Otherwise torch's default for the device."""
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    fused = allow_fused and len({p.device for p in params}) == 1 and \
        all(p.is_floating_point() for p in params)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95), fused=fused or None)


class ProxyLM(pl.LightningModule):
    """Next-token cross-entropy on the task's trained positions, plus the MoE auxiliary loss;
    AdamW under the budget's schedule; a learning-curve point every `budget.curve_every` steps
    (test loss and accuracy on the scored positions).

    `resume`: continue the run from this state (its weights are loaded into `model` by the
    caller; the optimiser, the schedule's position and the RNG here). `save_at`: keep the state
    after that many steps in `saved` (where a wsd schedule's decay begins).
    """

    def __init__(self, model: HybridLM, budget: Budget, vocab_size: int, token_unit: str,
                 resume: TrainingState | None = None, save_at: int | None = None) -> None:
        super().__init__()
        if len(budget.rates) != 1:
            raise ValueError(f"ProxyLM trains at one learning rate, got the sweep {budget.lr}; "
                             f"run_trial runs a sweep one rate at a time")
        self.model = model
        self.budget = budget
        self.vocab_size = vocab_size
        self.token_unit = token_unit
        self.curve: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.train_tokens = 0
        self._parts: list[dict[str, float]] = []
        self._batch_started = 0.0
        # (step, merged scores) of the latest validation: when it covered the whole test set at
        # the last step, it is the final score and the test set is not scored a second time.
        self.last_validation: tuple[int, dict[str, float]] | None = None
        self.resume = resume
        self.offset = 0 if resume is None else resume.step  # steps trained before this fit
        self.save_at = save_at
        self.saved: TrainingState | None = None

    @property
    def step(self) -> int:
        """Optimiser steps of the whole run so far, those before a resume included."""
        return self.offset + int(self.global_step)

    def on_train_start(self) -> None:
        if self.resume is not None:
            set_rng_state(self.resume.rng)

    def training_step(self, batch, batch_idx):
        inputs, targets, loss_mask = batch
        out = self.model(inputs)
        loss = masked_cross_entropy(out.logits, targets, loss_mask)
        total = loss + self.budget.aux_loss_weight * out.aux_loss
        if not torch.isfinite(total):
            raise NonFiniteLoss(self.step)
        return total

    # Throughput counts the training batches only, not validation or set-up.
    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_seconds += time.perf_counter() - self._batch_started
        self.train_tokens += batch[0].numel()
        if self.save_at is not None and self.step == self.save_at and self.saved is None:
            self.saved = TrainingState(
                step=self.step, batches=self.step, model=to_cpu(self.model.state_dict()),
                optimizer=to_cpu(self.trainer.optimizers[0].state_dict()), rng=rng_state())

    def validation_step(self, batch, batch_idx) -> None:
        inputs, targets, loss_mask, score_mask = batch
        data = TaskData(inputs, targets, loss_mask, score_mask, self.vocab_size, self.token_unit)
        self._parts.append(score(self.model(inputs).logits.float(), data))

    def on_validation_epoch_end(self) -> None:
        if self._parts:
            merged = merge_scores(self._parts)
            self.last_validation = (self.step, merged)
            self.curve.append({"step": self.step, "loss": merged["loss"],
                               "accuracy": merged["accuracy"]})
        self._parts = []

    def configure_optimizers(self):
        # Lightning's mixed-precision plugins refuse to clip the gradients of a fused optimiser
        # (it would unscale them itself under fp16), so mixed precision keeps torch's default.
        optimizer = adamw(self.model, self.budget.lr, self.budget.weight_decay,
                          allow_fused=not isinstance(self.trainer.precision_plugin,
                                                     MixedPrecision))
        offset = self.offset
        if self.resume is not None:
            optimizer.load_state_dict(self.resume.optimizer)  # moments, step counts, initial_lr
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, self.budget.lr_factor if not offset else
            (lambda step: self.budget.lr_factor(offset + step)))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class StepBatches(Sampler[list[int]]):
    """An endless stream of training batches in which batch k is a function of (seed, k) alone:
    epoch e = k // (batches per epoch) is a permutation drawn from a generator seeded with
    (seed, e), cut into batches (the last partial one dropped). A run continued at batch k draws
    exactly the batches an uninterrupted run would have drawn from there."""

    def __init__(self, size: int, batch_size: int, seed: int, start: int = 0) -> None:
        self.size, self.batch_size = size, batch_size
        self.per_epoch = size // batch_size
        self.seed, self.start = seed, start

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63)
        return torch.randperm(self.size, generator=generator)

    def __iter__(self) -> Iterator[list[int]]:
        k = self.start
        epoch, permutation = None, None
        while True:
            if k // self.per_epoch != epoch:
                epoch = k // self.per_epoch
                permutation = self.permutation(epoch)
            index = k % self.per_epoch
            yield permutation[index * self.batch_size:(index + 1) * self.batch_size].tolist()
            k += 1


class TaskDataModule(pl.LightningDataModule):
    """Batches of one task's train and test sets (already generated and cached).

    `start`: None draws shuffled epochs from one seeded generator (the cosine schedule's
    stream, unchanged since the first release); an int draws the step-indexed stream
    (`StepBatches`) from that batch on, which a continued run can pick up where it stopped.
    """

    def __init__(self, train: TaskData, test: TaskData, batch_size: int, seed: int,
                 start: int | None = None) -> None:
        super().__init__()
        self.train, self.test = train, test
        self.batch_size = batch_size
        self.seed = seed
        self.start = start

    def train_dataloader(self) -> DataLoader:
        data = TensorDataset(self.train.inputs, self.train.targets, self.train.loss_mask)
        batch_size = min(self.batch_size, len(data))
        if self.start is not None:
            return DataLoader(data, batch_sampler=StepBatches(len(data), batch_size, self.seed,
                                                              self.start))
        return DataLoader(data, batch_size=batch_size, shuffle=True,
                          drop_last=True, generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        data = TensorDataset(self.test.inputs, self.test.targets, self.test.loss_mask,
                             self.test.score_mask)
        return DataLoader(data, batch_size=max(self.batch_size, 64), shuffle=False)
