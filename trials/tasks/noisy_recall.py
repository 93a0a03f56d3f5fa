"""MAD noisy in-context recall, baseline: vocab 16, seq 128, 16 noise tokens, noise fraction 0.2.

In-context recall (in_context_recall.py) where each two-token pair slot is, with probability
`noise_fraction`, two tokens from a separate noise vocabulary instead of a key and its value.
The noise tokens are ids kv_vocab_size .. kv_vocab_size + noise_vocab_size - 1, so the model's
vocabulary is 16 + 16 = 32 at the baseline. A model must learn to ignore them.

Trained and scored: as in in-context recall, the key positions whose key appeared earlier
outside noise; noise positions are in neither mask.
"""

from __future__ import annotations

from dataclasses import dataclass

from trials.tasks.in_context_recall import InContextRecall


@dataclass(frozen=True)
class NoisyRecall(InContextRecall):
    seq_len: int = 128
    kv_vocab_size: int = 16
    noise_vocab_size: int = 16
    noise_fraction: float = 0.2

    kind = "noisy_recall"
