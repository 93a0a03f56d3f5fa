"""MAD selective copying, baseline: vocab 16, seq 256, 16 tokens to copy.

`n_copy` content tokens are scattered, in order, at random positions of a region of blanks;
a separator follows the region, then the same tokens again in order:

    _ a _ _ b _ c _ _ _ ... _ d _ | a b c ... d
    `---- region: seq_len - n_copy ----'  `sep + copies'

The vocabulary holds vocab_size - 2 content tokens (drawn with replacement), the blank
(vocab_size - 2) and the separator (vocab_size - 1). The whole sequence is seq_len + 1 tokens,
shifted into inputs and targets (teacher forcing, as in next-token training).

Trained and scored: the separator and the copies but the last, whose targets are the copied
tokens in order (n_copy positions). The region's next tokens are random, so they are in
neither mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trials.tasks.base import Task, TaskData, TaskError, distinct_rows, from_sequences


@dataclass(frozen=True)
class SelectiveCopying(Task):
    seq_len: int = 256
    vocab_size: int = 16
    n_copy: int = 16

    kind = "selective_copying"

    def __post_init__(self) -> None:
        length = self._int("seq_len", minimum=2)
        self._int("vocab_size", minimum=3)
        copies = self._int("n_copy")
        if 2 * copies > length:
            raise TaskError("n_copy", f"needs seq_len >= 2 * n_copy = {2 * copies} "
                            f"(the region and the copies), got seq_len = {length}")

    @property
    def blank(self) -> int:
        return self.vocab_size - 2

    @property
    def separator(self) -> int:
        return self.vocab_size - 1

    def _generate(self, n: int, rng: np.random.Generator, split: str) -> TaskData:
        copies, region = self.n_copy, self.seq_len - self.n_copy
        tokens = rng.integers(0, self.vocab_size - 2, size=(n, copies))
        positions = np.sort(distinct_rows(rng, n, region, copies), axis=1)
        sequences = np.full((n, self.seq_len + 1), self.blank, dtype=np.int64)
        np.put_along_axis(sequences, positions, tokens, axis=1)
        sequences[:, region] = self.separator
        sequences[:, region + 1:] = tokens
        mask = np.zeros((n, self.seq_len), dtype=bool)
        mask[:, region:] = True
        return from_sequences(sequences, mask, self.vocab_size)
