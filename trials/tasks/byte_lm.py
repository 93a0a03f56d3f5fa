"""Byte-level language modelling on a real corpus; vocabulary: the 256 byte values.

The corpus (`source`) is a file, a folder (every file below it, hidden folders skipped) or a
glob (`data/**/*.txt`), relative to the working directory. Without one it is the Python
standard library's own `*.py` sources (`sysconfig.get_paths()["stdlib"]`, without
site-packages): present wherever the toolkit runs, though it differs between Python versions
(the corpus fingerprint, part of the cache key, tells them apart).

Determinism: files are read in sorted order of their relative names and the corpus is capped
at `max_bytes` (the last file read is cut). Each file is cut into blocks of `block_bytes`, and a
block is held out when the SHA-256 of its content, read as a fraction of 2^64, falls below
`held_out_fraction`. The split depends on content only, never on order or a random draw, and
identical blocks (copied files, boilerplate) always land on the same side. The train part is
the train blocks joined in order, the test part likewise.

An example is a window of seq_len + 1 bytes starting uniformly at random in its part (windows
may span a file boundary), shifted into inputs and targets. Trained and scored: every position.
`score` reports the loss in nats, `bpb` (bits per byte = loss / ln 2) and next-byte accuracy.

Train and test windows come from disjoint blocks, so the splits are disjoint by construction;
the row-by-row check of other tasks is off (`distinct_splits = False`) because two windows of
different text can still be byte-identical (common code lines).
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from trials.tasks.base import Task, TaskData, TaskError

SKIPPED_FOLDERS = {"site-packages", "dist-packages", "__pycache__"}


@dataclass(frozen=True, eq=False)
class Corpus:
    """A corpus read and split: `train` and `test` are uint8 arrays of bytes."""

    where: str
    files: tuple[str, ...]
    train: np.ndarray
    test: np.ndarray
    fingerprint: str


@dataclass(frozen=True)
class ByteLM(Task):
    seq_len: int = 256
    source: str | None = None
    max_bytes: int = 4 * 2**20
    held_out_fraction: float = 0.1
    block_bytes: int = 16 * 2**10

    kind = "byte_lm"
    distinct_splits = False

    def __post_init__(self) -> None:
        self._int("seq_len")
        self._int("max_bytes")
        self._int("block_bytes")
        fraction = self._float("held_out_fraction", 0.0, 1.0, closed_high=False)
        if fraction == 0:
            raise TaskError("held_out_fraction", "must be above 0 (the test part needs bytes)")
        if self.source is not None and (not isinstance(self.source, str) or not self.source):
            raise TaskError("source", f"expected a path or glob, got {self.source!r}")

    @property
    def vocab_size(self) -> int:
        return 256

    def corpus(self) -> Corpus:
        return load_corpus(self.source, self.max_bytes, self.block_bytes, self.held_out_fraction)

    def data_fingerprint(self) -> str:
        return self.corpus().fingerprint

    def _generate(self, n: int, rng: np.random.Generator, split: str) -> TaskData:
        corpus = self.corpus()
        part = corpus.train if split == "train" else corpus.test
        if len(part) < self.seq_len + 1:
            raise TaskError("source", f"{corpus.where}: the {split} part has {len(part)} bytes, "
                            f"fewer than seq_len + 1 = {self.seq_len + 1}")
        starts = rng.integers(0, len(part) - self.seq_len, size=n)
        windows = part[starts[:, None] + np.arange(self.seq_len + 1)].astype(np.int64)
        mask = torch.ones((n, self.seq_len), dtype=torch.bool)
        return TaskData(inputs=torch.from_numpy(windows[:, :-1].copy()),
                        targets=torch.from_numpy(windows[:, 1:].copy()),
                        loss_mask=mask, score_mask=mask.clone(), vocab_size=256,
                        token_unit="byte")


def default_corpus_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _walk(root: Path, suffix: str | None) -> list[tuple[str, Path]]:
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [s for s in subfolders
                         if not s.startswith(".") and s not in SKIPPED_FOLDERS]
        for name in names:
            if suffix is None or name.endswith(suffix):
                path = Path(folder) / name
                found.append((path.relative_to(root).as_posix(), path))
    return found


def corpus_files(source: str | None) -> tuple[str, list[tuple[str, Path]]]:
    """(a description naming the path, sorted (name, path) pairs). Raises TaskError naming the
    path when it does not exist or holds no files."""
    if source is None:
        root = default_corpus_root()
        where, files = f"{root}/**/*.py", _walk(root, ".py")
    else:
        path = Path(source).expanduser()
        where = source
        if path.is_file():
            files = [(path.name, path)]
        elif path.is_dir():
            files = _walk(path, None)
        elif any(char in source for char in "*?["):
            matches = glob.glob(os.path.expanduser(source), recursive=True)
            files = [(match, Path(match)) for match in matches if Path(match).is_file()]
        else:
            raise TaskError("source", f"{source}: no such file or folder")
    if not files:
        raise TaskError("source", f"{where}: no files found")
    return where, sorted(files)


@functools.lru_cache(maxsize=8)
def load_corpus(source: str | None, max_bytes: int, block_bytes: int,
                held_out_fraction: float) -> Corpus:
    """Read, cap and split a corpus (see the module docstring); memoised per process."""
    where, files = corpus_files(source)
    remaining = max_bytes
    train, test, used = [], [], []
    threshold = int(held_out_fraction * 2**64)
    for name, path in files:
        if remaining <= 0:
            break
        try:
            data = path.read_bytes()[:remaining]
        except OSError as error:
            raise TaskError("source", f"{path}: cannot read ({error.strerror})") from None
        remaining -= len(data)
        used.append(name)
        for offset in range(0, len(data), block_bytes):
            block = data[offset:offset + block_bytes]
            digest = int.from_bytes(hashlib.sha256(block).digest()[:8], "big")
            (test if digest < threshold else train).append(block)
    train_bytes, test_bytes = b"".join(train), b"".join(test)
    if not train_bytes and not test_bytes:
        raise TaskError("source", f"{where}: the corpus is empty (0 bytes)")
    fingerprint = hashlib.sha256()
    for part in (train_bytes, test_bytes):
        fingerprint.update(len(part).to_bytes(8, "big"))
        fingerprint.update(part)
    return Corpus(where=where, files=tuple(used),
                  train=np.frombuffer(train_bytes, dtype=np.uint8),
                  test=np.frombuffer(test_bytes, dtype=np.uint8),
                  fingerprint=fingerprint.hexdigest()[:16])
