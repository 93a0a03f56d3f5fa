"""MAD compression, baseline: vocab 16, 32 tokens to compress.

MAD appends a compression token to a random sequence and trains a small decoder to rebuild
the whole sequence from the model's output at that token alone. Our trials train plain causal
language models with no extra decoder, so this is a proxy in next-token form: the random tokens,
a marker, then one recall slot per remaining token, and the model must emit the original
tokens in order, one per position from the marker on:

    inputs   x1 x2 ... xT  M  S  S ... S         (T = n_tokens; seq_len = 2 T)
    targets  .  .  ...  .  x1 x2 x3 ... xT       (scored from M on)

The slots are a constant token, not the previous answer (no teacher forcing), so after the
marker the model gets no new information: a recurrent model must have kept the whole sequence
in its state, which is what MAD's compression measures. (Attention can still look back; MAD's
decoder-from-one-state form would forbid that, but it needs a different model head.)

Vocabulary: vocab_size - 2 content tokens (uniform), the marker (vocab_size - 2) and the slot
token (vocab_size - 1). Trained and scored: the T positions from the marker on. The targets
before the marker are the next input token (random), in neither mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trials.tasks.base import Task, TaskData


@dataclass(frozen=True)
class Compression(Task):
    n_tokens: int = 32
    vocab_size: int = 16

    kind = "compression"

    def __post_init__(self) -> None:
        self._int("n_tokens")
        self._int("vocab_size", minimum=3)

    @property
    def seq_len(self) -> int:
        return 2 * self.n_tokens

    @property
    def marker(self) -> int:
        return self.vocab_size - 2

    @property
    def slot(self) -> int:
        return self.vocab_size - 1

    def _generate(self, n: int, rng: np.random.Generator, split: str) -> TaskData:
        count = self.n_tokens
        tokens = rng.integers(0, self.vocab_size - 2, size=(n, count))
        inputs = np.full((n, 2 * count), self.slot, dtype=np.int64)
        inputs[:, :count] = tokens
        inputs[:, count] = self.marker
        targets = np.empty_like(inputs)
        targets[:, :count - 1] = tokens[:, 1:]
        targets[:, count - 1] = self.marker
        targets[:, count:] = tokens
        mask = np.zeros((n, 2 * count), dtype=bool)
        mask[:, count:] = True
        return TaskData(inputs=torch.from_numpy(inputs), targets=torch.from_numpy(targets),
                        loss_mask=torch.from_numpy(mask), score_mask=torch.from_numpy(mask.copy()),
                        vocab_size=self.vocab_size)
