"""Proxy tasks: MQAR, the MAD suite, byte-level LM; suites of them; metrics; an on-disk cache.

    task = MQAR(seq_len=64, num_kv_pairs=4)
    train, test = load_splits(task, n_train=1024, n_test=256, seed=0)   # cached, disjoint
    loss = masked_cross_entropy(model(train.inputs).logits, train.targets, train.loss_mask)
    metrics = score(model(test.inputs).logits, test)  # loss, accuracy, bits_per_token, ...

    suite = load_suite("quick")                       # or a YAML file
    quality = suite.quality({entry.name: metrics_of(entry) for entry in suite})

Each task file's docstring says what is trained and what is scored. See base.py for the
data contract and how train and test seeds are kept apart.
"""

from trials.tasks.base import (
    SPLITS,
    Task,
    TaskData,
    TaskError,
    drop_overlap,
    masked_cross_entropy,
    merge_scores,
    score,
    split_rng,
)
from trials.tasks.byte_lm import ByteLM, Corpus, load_corpus
from trials.tasks.cache import cache_dir, cache_key, cached_generate, load_splits
from trials.tasks.compression import Compression
from trials.tasks.fuzzy_recall import FuzzyRecall
from trials.tasks.in_context_recall import InContextRecall
from trials.tasks.memorization import Memorization
from trials.tasks.mqar import MQAR, MQAR_DIFFICULTIES
from trials.tasks.noisy_recall import NoisyRecall
from trials.tasks.selective_copying import SelectiveCopying
from trials.tasks.suite import (PRESETS, TASKS, Suite, SuiteEntry, SuiteError, SuiteTraining,
                                 load_suite)

__all__ = [
    "MQAR", "MQAR_DIFFICULTIES", "PRESETS", "SPLITS", "TASKS", "ByteLM", "Compression", "Corpus",
    "FuzzyRecall", "InContextRecall", "Memorization", "NoisyRecall", "SelectiveCopying", "Suite",
    "SuiteEntry", "SuiteError", "SuiteTraining", "Task", "TaskData", "TaskError", "cache_dir", "cache_key",
    "cached_generate", "drop_overlap", "load_corpus", "load_splits", "load_suite",
    "masked_cross_entropy", "merge_scores", "score", "split_rng",
]
