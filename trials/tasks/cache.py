"""On-disk cache of generated data sets, and `load_splits`, the usual way to get data.

    $HNAS_CACHE_DIR (default ~/.cache/hybrid-nas/tasks)/<kind>-<key>.pt

The key hashes the cache format, the task's kind and every setting, the fingerprint of any
outside data it reads (the LM corpus content), the number of examples, the seed and the split.
A file holds the four tensors (tokens stored in the smallest integer type that fits the
vocabulary), the key and a SHA-256 of the tensor bytes; a file that fails to load, holds another
key or fails its checksum is regenerated and rewritten. Files are written to a temporary name in
the same folder and renamed into place, so parallel workers never read half-written files (two
workers racing write the same bytes). A cached data set is identical, dtypes included, to a
freshly generated one: the cache never changes results.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import torch

from trials.tasks.base import TENSOR_FIELDS, Task, TaskData, drop_overlap

CACHE_ENV = "HNAS_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/hybrid-nas/tasks"
CACHE_FORMAT = 1


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def cache_key(task: Task, n_examples: int, seed: int, split: str) -> str:
    description = {"format": CACHE_FORMAT, "task": task.to_dict(),
                   "data": task.data_fingerprint(), "n_examples": n_examples, "seed": seed,
                   "split": split}
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:32]


def cache_path(task: Task, n_examples: int, seed: int, split: str,
               directory: str | Path | None = None) -> Path:
    folder = cache_dir() if directory is None else Path(directory)
    return folder / f"{task.kind}-{cache_key(task, n_examples, seed, split)}.pt"


def cached_generate(task: Task, n_examples: int, seed: int, split: str = "train", *,
                    directory: str | Path | None = None) -> TaskData:
    """`task.generate(n_examples, seed, split)`, read from the cache when a valid file exists."""
    key = cache_key(task, n_examples, seed, split)
    path = cache_path(task, n_examples, seed, split, directory)
    data = _read(path, key)
    if data is None:
        data = task.generate(n_examples, seed, split)
        try:
            _write(path, key, data)
        except OSError as error:
            warnings.warn(f"task cache {path.parent}: cannot write ({error}); not caching",
                          stacklevel=2)
    return data


def load_splits(task: Task, n_train: int, n_test: int, seed: int, *, cache: bool = True,
                directory: str | Path | None = None) -> tuple[TaskData, TaskData]:
    """Train and test sets from the two streams of `seed`; test examples whose inputs also occur
    in training are dropped (tasks with `distinct_splits`), so the sets never overlap."""
    if cache:
        train = cached_generate(task, n_train, seed, "train", directory=directory)
        test = cached_generate(task, n_test, seed, "test", directory=directory)
    else:
        train, test = task.generate(n_train, seed, "train"), task.generate(n_test, seed, "test")
    if task.distinct_splits:
        kept = drop_overlap(train, test)
        if len(kept) < len(test):
            warnings.warn(f"{task.label}: dropped {len(test) - len(kept)} test examples that "
                          f"also occur in training", stacklevel=2)
        test = kept
    return train, test


# -- file format --------------------------------------------------------------------------------

def _token_dtype(vocab_size: int) -> torch.dtype:
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if vocab_size - 1 <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in TENSOR_FIELDS:
        tensor = tensors[name]
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _write(path: Path, key: str, data: TaskData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    compact = _token_dtype(data.vocab_size)
    tensors = {"inputs": data.inputs.to(compact), "targets": data.targets.to(compact),
               "loss_mask": data.loss_mask, "score_mask": data.score_mask}
    payload = {**tensors, "key": key, "vocab_size": data.vocab_size,
               "token_unit": data.token_unit, "digest": _digest(tensors)}
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _read(path: Path, key: str) -> TaskData | None:
    """The cached data, or None when the file is missing, unreadable, foreign or corrupted."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload["key"] != key or payload["digest"] != _digest(payload):
            return None
        data = TaskData(inputs=payload["inputs"].long(), targets=payload["targets"].long(),
                        loss_mask=payload["loss_mask"], score_mask=payload["score_mask"],
                        vocab_size=int(payload["vocab_size"]),
                        token_unit=str(payload["token_unit"]))
        data.check()
        return data
    except Exception:  # noqa: BLE001  (any damage: the caller regenerates and overwrites)
        return None
