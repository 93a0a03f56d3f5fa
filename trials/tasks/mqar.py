"""MQAR: multi-query associative recall (Zoology, Arora et al. 2023).

A sequence of seq_len + 1 tokens (inputs drop the last, targets the first):

    k1 v1 k2 v2 ... kK vK | noise .. k3 v3 .. noise .. k1 v1 .. noise ..
    `---- kv block -----'   query keys at even positions after the block

- keys are `num_kv_pairs` distinct tokens from the lower half of the vocabulary, values are
  distinct tokens from the upper half; each key appears once in the kv block with its value;
- every key is queried exactly once afterwards, at an even position 2K + 2(g - 1) where the
  gap g in 1..S (S = the number of even slots left) is drawn without replacement with weight
  g^(a - 1), a = `power_a` = 0.01: mostly short gaps with a long tail. The i-th key is placed
  at the i-th gap drawn (Zoology's order); the token after each query key is its value;
- all other positions after the block hold uniform noise tokens from the whole vocabulary.

Trained and scored: only the query-key positions, whose target is the key's value. Nothing
else is predictable, so nothing else is in either mask.

Sizes follow Zoology's difficulty ladder (`MQAR_DIFFICULTIES`); Zoology's vocabulary of 8192 is
too large for CPU proxies, so the vocabulary is a setting (default 256).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trials.tasks.base import Task, TaskData, TaskError, distinct_rows, from_sequences

# (seq_len, num_kv_pairs) from easiest to hardest.
MQAR_DIFFICULTIES = ((64, 4), (128, 8), (256, 16), (512, 64))


@dataclass(frozen=True)
class MQAR(Task):
    seq_len: int = 64
    num_kv_pairs: int = 4
    vocab_size: int = 256
    power_a: float = 0.01

    kind = "mqar"

    def __post_init__(self) -> None:
        pairs = self._int("num_kv_pairs")
        length = self._int("seq_len", minimum=4)
        vocab = self._int("vocab_size", minimum=2)
        if self._float("power_a", 0.0, float("inf")) <= 0:
            raise TaskError("power_a", f"must be positive, got {self.power_a}")
        if 4 * pairs > length:
            raise TaskError("num_kv_pairs", f"needs seq_len >= 4 * num_kv_pairs = {4 * pairs} "
                            f"(kv block plus one query slot per key), got seq_len = {length}")
        if min(vocab // 2, vocab - vocab // 2) < pairs:
            raise TaskError("vocab_size", f"{vocab} leaves {vocab // 2} keys and "
                            f"{vocab - vocab // 2} values; {pairs} distinct pairs need "
                            f"vocab_size >= {2 * pairs}")

    @classmethod
    def preset(cls, level: int, vocab_size: int = 256) -> MQAR:
        """Difficulty `level` 1..4 of `MQAR_DIFFICULTIES`."""
        if not 1 <= level <= len(MQAR_DIFFICULTIES):
            raise TaskError("level", f"must be 1..{len(MQAR_DIFFICULTIES)}, got {level}")
        seq_len, pairs = MQAR_DIFFICULTIES[level - 1]
        return cls(seq_len=seq_len, num_kv_pairs=pairs, vocab_size=vocab_size)

    @property
    def label(self) -> str:
        return f"mqar_{self.seq_len}x{self.num_kv_pairs}"

    @property
    def query_slots(self) -> int:
        """Even positions after the kv block whose next token still fits in the sequence."""
        return (self.seq_len + 1 - 2 * self.num_kv_pairs) // 2

    def gap_weights(self) -> np.ndarray:
        """p(g) for g = 1..query_slots, proportional to g^(a - 1)."""
        gaps = np.arange(1, self.query_slots + 1, dtype=np.float64)
        weights = gaps ** (self.power_a - 1)
        return weights / weights.sum()

    def _generate(self, n: int, rng: np.random.Generator, split: str) -> TaskData:
        pairs, length, vocab = self.num_kv_pairs, self.seq_len, self.vocab_size
        half = vocab // 2
        keys = distinct_rows(rng, n, half, pairs)                       # (n, K)
        values = half + distinct_rows(rng, n, vocab - half, pairs)      # (n, K)
        sequences = rng.integers(0, vocab, size=(n, length + 1))       # noise everywhere
        sequences[:, 0:2 * pairs:2] = keys
        sequences[:, 1:2 * pairs:2] = values

        # Weighted sampling without replacement, in draw order, by the Gumbel top-k trick:
        # sorting log p + Gumbel noise gives the order of sequential draws.
        log_p = np.log(self.gap_weights())
        perturbed = log_p + rng.gumbel(size=(n, self.query_slots))
        slots = np.argsort(-perturbed, axis=1)[:, :pairs]               # (n, K) gap - 1
        positions = 2 * pairs + 2 * slots
        np.put_along_axis(sequences, positions, keys, axis=1)
        np.put_along_axis(sequences, positions + 1, values, axis=1)

        mask = np.zeros((n, length), dtype=bool)
        np.put_along_axis(mask, positions, True, axis=1)
        return from_sequences(sequences, mask, vocab)
