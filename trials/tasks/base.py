"""The task contract: a frozen spec generates `TaskData`; `score` turns logits into metrics.

Every proxy task is a frozen dataclass holding its settings, with one method that matters:

    task.generate(n_examples, seed, split="train") -> TaskData
        inputs      (n, seq_len) long   the tokens the model reads
        targets     (n, seq_len) long   the token the model should emit at each position
                                        (the next token of the sequence)
        loss_mask   (n, seq_len) bool   positions trained on with cross-entropy
        score_mask  (n, seq_len) bool   positions scored for next-token accuracy
        vocab_size  int                 the model's vocabulary (every token is below it)

Seeds and splits. Generation draws from `split_rng(seed, split)`: a NumPy `SeedSequence` with
the seed as entropy and the split's stream number as spawn key (train 0, test 1). The test set
of a seed is therefore an independent stream of the train set's seed, never the train stream of
another seed, and `split` is all a caller chooses. `drop_overlap` removes any test example whose
inputs also occur in the training set (for the synthetic tasks this practically never happens;
the byte LM splits its corpus by file instead, see byte_lm.py).
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from search_spaces.errors import UserError

SPLITS = {"train": 0, "test": 1}
# Spawn key of task-level randomness that must not depend on the split (memorization's map).
TASK_STREAM = 2


class TaskError(UserError):
    """A bad task setting or input; the message starts with the field it is about."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def split_rng(seed: int, split: str) -> np.random.Generator:
    """The generator of one split of one seed (independent streams of the same entropy)."""
    if split not in SPLITS:
        raise TaskError("split", f"unknown split {split!r} (valid: {', '.join(SPLITS)})")
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(SPLITS[split],)))


def task_rng(seed: int) -> np.random.Generator:
    """Randomness that belongs to the task itself and is shared by every split."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(TASK_STREAM,)))


@dataclass(frozen=True, eq=False)
class TaskData:
    """A generated data set; index it (`data[:32]`, `data[idx]`) to get a batch."""

    inputs: torch.Tensor
    targets: torch.Tensor
    loss_mask: torch.Tensor
    score_mask: torch.Tensor
    vocab_size: int
    token_unit: str = "token"  # "byte" for byte-level LM: `score` then also reports bpb

    def __len__(self) -> int:
        return self.inputs.shape[0]

    @property
    def seq_len(self) -> int:
        return self.inputs.shape[1]

    def __getitem__(self, index) -> TaskData:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return dataclasses.replace(self, inputs=self.inputs[index], targets=self.targets[index],
                                   loss_mask=self.loss_mask[index],
                                   score_mask=self.score_mask[index])

    def check(self) -> None:
        """Raise AssertionError unless shapes, dtypes and token ranges agree with the contract."""
        shape = self.inputs.shape
        assert self.inputs.dim() == 2, f"inputs must be (n, seq_len), got {tuple(shape)}"
        for name in ("targets", "loss_mask", "score_mask"):
            tensor = getattr(self, name)
            assert tensor.shape == shape, f"{name} has shape {tuple(tensor.shape)}, not {shape}"
        assert self.inputs.dtype == self.targets.dtype == torch.long, "tokens must be long"
        assert self.loss_mask.dtype == self.score_mask.dtype == torch.bool, "masks must be bool"
        for name in ("inputs", "targets"):
            tokens = getattr(self, name)
            assert tokens.numel() == 0 or (tokens.min() >= 0 and tokens.max() < self.vocab_size), \
                f"{name} has tokens outside [0, {self.vocab_size})"

    def equals(self, other: TaskData) -> bool:
        """Same tensors (values and dtypes), vocabulary and unit."""
        return (self.vocab_size == other.vocab_size and self.token_unit == other.token_unit
                and all(getattr(self, name).dtype == getattr(other, name).dtype
                        and torch.equal(getattr(self, name), getattr(other, name))
                        for name in TENSOR_FIELDS))


TENSOR_FIELDS = ("inputs", "targets", "loss_mask", "score_mask")


def from_sequences(sequences: np.ndarray, mask: np.ndarray, vocab_size: int,
                   score_mask: np.ndarray | None = None) -> TaskData:
    """TaskData from full sequences (n, seq_len + 1): inputs drop the last token, targets the
    first. `mask` (n, seq_len) marks trained positions; scored ones too unless `score_mask`."""
    sequences = np.ascontiguousarray(sequences, dtype=np.int64)
    return TaskData(
        inputs=torch.from_numpy(sequences[:, :-1].copy()),
        targets=torch.from_numpy(sequences[:, 1:].copy()),
        loss_mask=torch.from_numpy(np.ascontiguousarray(mask, dtype=bool)),
        score_mask=torch.from_numpy(np.ascontiguousarray(
            mask if score_mask is None else score_mask, dtype=bool)),
        vocab_size=vocab_size,
    )


def distinct_rows(rng: np.random.Generator, n: int, population: int, k: int) -> np.ndarray:
    """(n, k) integers, each row k distinct draws from range(population) in random order."""
    return np.argsort(rng.random((n, population)), axis=1)[:, :k]


class Task(abc.ABC):
    """Base of every task spec. Subclasses are frozen dataclasses with:

    - `kind`: the registry key (`mqar`, `in_context_recall`, ...);
    - `seq_len` and `vocab_size` (fields or properties): the shape a model must accept;
    - `_generate(n_examples, rng) -> TaskData`, and `__post_init__` validation that raises
      TaskError naming the field.
    """

    kind: ClassVar[str]
    # Whether test examples can be checked against training examples row by row (see module).
    distinct_splits: ClassVar[bool] = True
    seq_len: int
    vocab_size: int

    def generate(self, n_examples: int, seed: int, split: str = "train") -> TaskData:
        """`n_examples` examples from the `split` stream of `seed` (deterministic)."""
        if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1:
            raise TaskError("n_examples", f"expected a positive integer, got {n_examples!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise TaskError("seed", f"expected a non-negative integer, got {seed!r}")
        return self._generate(n_examples, split_rng(seed, split), split)

    @abc.abstractmethod
    def _generate(self, n_examples: int, rng: np.random.Generator, split: str) -> TaskData:
        """The examples, drawn from `rng` (the split's own stream)."""

    @property
    def label(self) -> str:
        """A short name for reports and suites (tasks with presets add their size)."""
        return self.kind

    def settings(self) -> dict[str, Any]:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.kind, "settings": self.settings()}

    def fingerprint(self) -> str:
        """Identifies the spec: kind and every setting."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def data_fingerprint(self) -> str | None:
        """Identifies outside data the task reads (the LM corpus); None for synthetic tasks."""
        return None

    # -- validation helpers for __post_init__ ---------------------------------------------------

    def _int(self, name: str, minimum: int = 1) -> int:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TaskError(name, f"expected an integer, got {value!r}")
        if value < minimum:
            raise TaskError(name, f"must be at least {minimum}, got {value}")
        return value

    def _float(self, name: str, low: float, high: float, *, closed_high: bool = True) -> float:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TaskError(name, f"expected a number, got {value!r}")
        if not (low <= value <= high) or (value == high and not closed_high):
            bracket = "]" if closed_high else ")"
            raise TaskError(name, f"must be in [{low}, {high}{bracket}, got {value}")
        object.__setattr__(self, name, float(value))  # 1 and 1.0 are one setting (fingerprints)
        return float(value)


def drop_overlap(train: TaskData, test: TaskData) -> TaskData:
    """`test` without the examples whose inputs also occur in `train`."""
    seen = {row.tobytes() for row in train.inputs.numpy()}
    keep = [i for i, row in enumerate(test.inputs.numpy()) if row.tobytes() not in seen]
    if len(keep) == len(test):
        return test
    return test[torch.tensor(keep, dtype=torch.long)]


# -- metrics ------------------------------------------------------------------------------------

def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the masked positions (differentiable; the training loss)."""
    mask = mask.to(logits.device)
    return F.cross_entropy(logits[mask].float(), targets.to(logits.device)[mask])


@torch.no_grad()
def score(logits: torch.Tensor, data: TaskData) -> dict[str, float]:
    """Metrics of `logits` (n, seq_len, >= vocab_size) on `data`:

    loss            mean cross-entropy (nats) over `loss_mask` positions
    bits_per_token  loss / ln 2 (and `bpb`, the same number, when the tokens are bytes)
    accuracy        argmax == target over `score_mask` positions
    n_loss, n_scored  how many positions each mean covers (for `merge_scores`)
    """
    n, length = data.inputs.shape
    if logits.dim() != 3 or tuple(logits.shape[:2]) != (n, length):
        raise ValueError(f"logits must be ({n}, {length}, vocab), got {tuple(logits.shape)}")
    if logits.shape[-1] < data.vocab_size:
        raise ValueError(f"logits cover {logits.shape[-1]} tokens; the task needs "
                         f"{data.vocab_size}")
    targets = data.targets.to(logits.device)
    loss_mask = data.loss_mask.to(logits.device)
    score_mask = data.score_mask.to(logits.device)
    n_loss, n_scored = int(loss_mask.sum()), int(score_mask.sum())
    loss = (F.cross_entropy(logits[loss_mask].float(), targets[loss_mask], reduction="sum").item()
            / n_loss if n_loss else math.nan)
    correct = logits[score_mask].argmax(-1) == targets[score_mask]
    accuracy = correct.float().mean().item() if n_scored else math.nan
    metrics = {"loss": loss, "bits_per_token": loss / math.log(2), "accuracy": accuracy,
               "n_loss": n_loss, "n_scored": n_scored}
    if data.token_unit == "byte":
        metrics["bpb"] = metrics["bits_per_token"]
    return metrics


def merge_scores(parts: Sequence[dict[str, float]]) -> dict[str, float]:
    """Combine the `score` of several batches into the score of their union."""
    if not parts:
        raise ValueError("merge_scores needs at least one score")
    n_loss = sum(part["n_loss"] for part in parts)
    n_scored = sum(part["n_scored"] for part in parts)
    loss = (sum(part["loss"] * part["n_loss"] for part in parts if part["n_loss"]) / n_loss
            if n_loss else math.nan)
    accuracy = (sum(part["accuracy"] * part["n_scored"] for part in parts if part["n_scored"])
                / n_scored if n_scored else math.nan)
    merged = {"loss": loss, "bits_per_token": loss / math.log(2), "accuracy": accuracy,
              "n_loss": n_loss, "n_scored": n_scored}
    if all("bpb" in part for part in parts):
        merged["bpb"] = merged["bits_per_token"]
    return merged
