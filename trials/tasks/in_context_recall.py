"""MAD in-context recall (Poli et al. 2024), multi-query, baseline: vocab 16, seq 128.

Each sequence has its own random key -> value map (keys: the lower half of the
`kv_vocab_size` tokens, values: the upper half, a random one-to-one map). The sequence is
key-value pairs, keys drawn uniformly with replacement, so every key recurs many times:

    k3 v(k3) k1 v(k1) k3 v(k3) k7 v(k7) k1 v(k1) ...
                      ^^ scored: k3 was seen before, its value is predictable

With `noise_fraction` > 0 (noisy recall, noisy_recall.py) each two-token pair slot is, with that
probability, replaced by two tokens from a separate noise vocabulary of `noise_vocab_size`
tokens (ids after the key and value tokens), which carry no key or value.

Trained and scored (MAD ignores every other target): the key positions whose key already
appeared earlier in the same sequence (outside noise), with the key's value as target. First
occurrences, value positions (their next token is a fresh random key) and noise are in neither
mask.

The sequence is built with seq_len + 1 tokens and shifted, so inputs and targets are seq_len.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trials.tasks.base import Task, TaskData, TaskError, distinct_rows, from_sequences


@dataclass(frozen=True)
class InContextRecall(Task):
    seq_len: int = 128
    kv_vocab_size: int = 16
    noise_vocab_size: int = 0
    noise_fraction: float = 0.0

    kind = "in_context_recall"

    def __post_init__(self) -> None:
        self._int("seq_len", minimum=4)
        self._int("kv_vocab_size", minimum=2)
        self._int("noise_vocab_size", minimum=0)
        fraction = self._float("noise_fraction", 0.0, 1.0, closed_high=False)
        if fraction > 0 and self.noise_vocab_size == 0:
            raise TaskError("noise_vocab_size", "noise_fraction > 0 needs noise tokens")

    @property
    def vocab_size(self) -> int:
        return self.kv_vocab_size + self.noise_vocab_size

    @property
    def n_keys(self) -> int:
        return self.kv_vocab_size // 2

    def _generate(self, n: int, rng: np.random.Generator, split: str) -> TaskData:
        n_keys, n_values = self.n_keys, self.kv_vocab_size - self.n_keys
        n_pairs = (self.seq_len + 2) // 2                                 # 2 * n_pairs >= seq_len + 1
        value_of = n_keys + distinct_rows(rng, n, n_values, n_keys)       # (n, n_keys) the map
        keys = rng.integers(0, n_keys, size=(n, n_pairs))
        values = np.take_along_axis(value_of, keys, axis=1)
        pairs = np.stack([keys, values], axis=-1)                         # (n, P, 2)

        is_noise = np.zeros((n, n_pairs), dtype=bool)
        if self.noise_fraction > 0:
            is_noise = rng.random((n, n_pairs)) < self.noise_fraction
            noise = rng.integers(self.kv_vocab_size, self.vocab_size, size=(n, n_pairs, 2))
            pairs = np.where(is_noise[..., None], noise, pairs)

        # How often each pair's key was shown (outside noise) before that pair.
        shown = (keys[..., None] == np.arange(n_keys)) & ~is_noise[..., None]   # (n, P, keys)
        before = np.cumsum(shown, axis=1) - shown
        seen = (np.take_along_axis(before, keys[..., None], axis=2)[..., 0] > 0) & ~is_noise

        mask = np.zeros((n, 2 * n_pairs), dtype=bool)
        mask[:, 0::2] = seen                                             # key positions
        sequences = pairs.reshape(n, 2 * n_pairs)[:, :self.seq_len + 1]
        return from_sequences(sequences, mask[:, :self.seq_len], self.vocab_size)
