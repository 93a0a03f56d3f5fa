"""MAD fuzzy in-context recall, baseline: vocab 16, seq 128, keys and values of 1-3 tokens.

In-context recall where keys and values are short token strings instead of single tokens.
Each sequence draws `num_keys` keys, each 1..`max_key_len` tokens from the lower half of the
`kv_vocab_size` tokens, and gives each key a value of 1..`max_value_len` tokens from the upper
half. The sequence is key-value pairs with keys drawn uniformly with replacement:

    k k | v v v | k | v | k k | v v v | ...     (k: key tokens, v: value tokens)

Keys and values use disjoint tokens, so the boundaries are visible, and the keys of a sequence
are prefix-free (no key starts another), so a key is complete, and its value determined, as
soon as its last token has been read.

Trained and scored: for each pair whose key already appeared earlier in the sequence, the
position of the key's last token (target: the value's first token) and every value position but
the last (target: the value's next token). The last value token is followed by a fresh random
key, and first occurrences cannot be known; neither is in any mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trials.tasks.base import Task, TaskData, TaskError, from_sequences

MAX_ATTEMPTS = 10_000


@dataclass(frozen=True)
class FuzzyRecall(Task):
    seq_len: int = 128
    kv_vocab_size: int = 16
    max_key_len: int = 3
    max_value_len: int = 3
    num_keys: int = 8

    kind = "fuzzy_recall"

    def __post_init__(self) -> None:
        self._int("seq_len", minimum=4)
        self._int("kv_vocab_size", minimum=2)
        self._int("max_key_len")
        self._int("max_value_len")
        keys = self._int("num_keys")
        # With at most as many keys as key tokens a prefix-free set always exists (a key made
        # of one unused first token fits), so sampling one terminates.
        if keys > self.kv_vocab_size // 2:
            raise TaskError("num_keys", f"at most kv_vocab_size // 2 = "
                            f"{self.kv_vocab_size // 2} keys, got {keys}")

    @property
    def vocab_size(self) -> int:
        return self.kv_vocab_size

    def _keys(self, rng: np.random.Generator) -> list[tuple[int, ...]]:
        """`num_keys` distinct prefix-free keys, candidates drawn in batches (rejection)."""
        n_tokens = self.kv_vocab_size // 2
        keys: list[tuple[int, ...]] = []
        for _ in range(MAX_ATTEMPTS):
            lengths = rng.integers(1, self.max_key_len + 1, size=4 * self.num_keys).tolist()
            tokens = rng.integers(0, n_tokens, size=(4 * self.num_keys, self.max_key_len))
            for length, row in zip(lengths, tokens.tolist()):
                key = tuple(row[:length])
                if all(key[:len(other)] != other and other[:length] != key for other in keys):
                    keys.append(key)
                    if len(keys) == self.num_keys:
                        return keys
        raise RuntimeError("fuzzy recall: could not draw a prefix-free key set")  # unreachable

    def _values(self, rng: np.random.Generator) -> list[tuple[int, ...]]:
        lengths = rng.integers(1, self.max_value_len + 1, size=self.num_keys).tolist()
        tokens = rng.integers(self.kv_vocab_size // 2, self.kv_vocab_size,
                              size=(self.num_keys, self.max_value_len)).tolist()
        return [tuple(row[:length]) for length, row in zip(lengths, tokens)]

    def _generate(self, n: int, rng: np.random.Generator, split: str) -> TaskData:
        total = self.seq_len + 1
        sequences = np.zeros((n, total), dtype=np.int64)
        mask = np.zeros((n, total), dtype=bool)
        for row in range(n):
            keys, values = self._keys(rng), self._values(rng)
            tokens: list[int] = []
            scored: list[int] = []
            seen: set[int] = set()
            # Each pair has at least 2 tokens, so total // 2 + 1 pairs always fill the row.
            for index in rng.integers(0, len(keys), size=total // 2 + 1).tolist():
                tokens.extend(keys[index])
                if index in seen:
                    last_key = len(tokens) - 1
                    scored.extend(range(last_key, last_key + len(values[index])))
                seen.add(index)
                tokens.extend(values[index])
                if len(tokens) >= total:
                    break
            sequences[row] = tokens[:total]
            mask[row, [p for p in scored if p < self.seq_len]] = True
        return from_sequences(sequences, mask[:, :self.seq_len], self.vocab_size)
