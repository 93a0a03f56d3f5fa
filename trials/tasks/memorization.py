"""MAD memorization, baseline: vocab 256, seq 32.

One fixed key -> value map, drawn once from `map_seed` (a task setting, so train and test, and
every seed, share it): keys are the lower half of the vocabulary, values the upper half, a
random one-to-one map. Sequences are key-value pairs with distinct keys:

    k17 v(k17) k3 v(k3) k90 v(k90) ...

Keys within a sequence never repeat, so the value cannot be read from the context: it must come
from the weights. The data generation seed only chooses which keys appear, in which order.

Trained and scored: the key positions (target: the key's value). The value positions' next
tokens are random keys, in neither mask. The sequence is seq_len + 1 tokens, shifted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trials.tasks.base import (
    Task,
    TaskData,
    TaskError,
    distinct_rows,
    from_sequences,
    task_rng,
)


@dataclass(frozen=True)
class Memorization(Task):
    seq_len: int = 32
    vocab_size: int = 256
    map_seed: int = 0

    kind = "memorization"

    def __post_init__(self) -> None:
        length = self._int("seq_len", minimum=2)
        vocab = self._int("vocab_size", minimum=2)
        self._int("map_seed", minimum=0)
        if (length + 2) // 2 > vocab // 2:
            raise TaskError("seq_len", f"{length} needs {(length + 2) // 2} distinct keys; "
                            f"vocab_size {vocab} has {vocab // 2}")

    def value_map(self) -> np.ndarray:
        """values[key] for every key 0 .. vocab_size // 2 - 1 (the same for every split)."""
        n_keys = self.vocab_size // 2
        rng = task_rng(self.map_seed)
        return n_keys + distinct_rows(rng, 1, self.vocab_size - n_keys, n_keys)[0]

    def _generate(self, n: int, rng: np.random.Generator, split: str) -> TaskData:
        n_pairs = (self.seq_len + 2) // 2
        keys = distinct_rows(rng, n, self.vocab_size // 2, n_pairs)
        pairs = np.stack([keys, self.value_map()[keys]], axis=-1)        # (n, P, 2)
        sequences = pairs.reshape(n, 2 * n_pairs)[:, :self.seq_len + 1]
        mask = np.zeros((n, 2 * n_pairs), dtype=bool)
        mask[:, 0::2] = True
        return from_sequences(sequences, mask[:, :self.seq_len], self.vocab_size)
