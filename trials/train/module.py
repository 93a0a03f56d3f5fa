"""The LightningModule that trains a HybridLM on one proxy task, and its data module."""

from __future__ import annotations

import time

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from trials.model import HybridLM
from trials.tasks import TaskData, masked_cross_entropy, merge_scores, score
from trials.train.budget import Budget


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite; the candidate stops there."""

    def __init__(self, step: int) -> None:
        super().__init__(f"nan_loss at step {step}")
        self.step = step


class ProxyLM(pl.LightningModule):
    """Next-token cross-entropy on the task's trained positions, plus the MoE auxiliary loss;
    AdamW with warm-up then cosine decay; a learning-curve point every `budget.curve_every`
    steps (test loss and accuracy on the scored positions)."""

    def __init__(self, model: HybridLM, budget: Budget, vocab_size: int, token_unit: str) -> None:
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

    def training_step(self, batch, batch_idx):
        inputs, targets, loss_mask = batch
        out = self.model(inputs)
        loss = masked_cross_entropy(out.logits, targets, loss_mask)
        total = loss + self.budget.aux_loss_weight * out.aux_loss
        if not torch.isfinite(total):
            raise NonFiniteLoss(self.global_step)
        return total

    # Throughput counts the training batches only, not validation or set-up.
    def on_train_batch_start(self, batch, batch_idx) -> None:
        self._batch_started = time.perf_counter()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.train_seconds += time.perf_counter() - self._batch_started
        self.train_tokens += batch[0].numel()

    def validation_step(self, batch, batch_idx) -> None:
        inputs, targets, loss_mask, score_mask = batch
        data = TaskData(inputs, targets, loss_mask, score_mask, self.vocab_size, self.token_unit)
        self._parts.append(score(self.model(inputs).logits.float(), data))

    def on_validation_epoch_end(self) -> None:
        if self._parts:
            merged = merge_scores(self._parts)
            self.last_validation = (int(self.global_step), merged)
            self.curve.append({"step": int(self.global_step), "loss": merged["loss"],
                               "accuracy": merged["accuracy"]})
        self._parts = []

    def configure_optimizers(self):
        # Weight decay on matrices only: norms, biases and the SSMs' A_log / D / dt bias keep
        # their scale (as Mamba and Griffin train them).
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.budget.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.budget.lr, betas=(0.9, 0.95))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self.budget.lr_factor)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class TaskDataModule(pl.LightningDataModule):
    """Batches of one task's train and test sets (already generated and cached)."""

    def __init__(self, train: TaskData, test: TaskData, batch_size: int, seed: int) -> None:
        super().__init__()
        self.train, self.test = train, test
        self.batch_size = batch_size
        self.seed = seed

    def train_dataloader(self) -> DataLoader:
        data = TensorDataset(self.train.inputs, self.train.targets, self.train.loss_mask)
        return DataLoader(data, batch_size=min(self.batch_size, len(data)), shuffle=True,
                          drop_last=True, generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        data = TensorDataset(self.test.inputs, self.test.targets, self.test.loss_mask,
                             self.test.score_mask)
        return DataLoader(data, batch_size=max(self.batch_size, 64), shuffle=False)
