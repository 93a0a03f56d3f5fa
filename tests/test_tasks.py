"""Proxy tasks: formats and masks of every generator, determinism, disjoint splits, the LM corpus,
the cache, suites and the metrics."""

from __future__ import annotations

import math
import re
from itertools import groupby

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trials.tasks import (
    MQAR,
    MQAR_DIFFICULTIES,
    PRESETS,
    TASKS,
    ByteLM,
    Compression,
    FuzzyRecall,
    InContextRecall,
    Memorization,
    NoisyRecall,
    SelectiveCopying,
    Suite,
    SuiteError,
    SuiteTraining,
    TaskData,
    TaskError,
    cache_key,
    cached_generate,
    drop_overlap,
    load_corpus,
    load_splits,
    load_suite,
    masked_cross_entropy,
    merge_scores,
    score,
)
from trials.tasks.cache import cache_path

# Small settings of every synthetic task, so the generic tests stay fast.
SMALL = {
    "mqar": MQAR(seq_len=64, num_kv_pairs=4, vocab_size=64),
    "in_context_recall": InContextRecall(seq_len=64),
    "noisy_recall": NoisyRecall(seq_len=64),
    "fuzzy_recall": FuzzyRecall(seq_len=64),
    "selective_copying": SelectiveCopying(seq_len=64, n_copy=8),
    "compression": Compression(n_tokens=16),
    "memorization": Memorization(seq_len=32),
}
SYNTHETIC = sorted(SMALL)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test writes its cache under its own temporary folder, never under ~/.cache."""
    monkeypatch.setenv("HNAS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def text_folder(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for index in range(40):
        (folder / f"doc{index:02d}.txt").write_text(f"document {index}\n" + "lorem ipsum " * 200)
    return folder


def test_every_registered_task_has_a_small_setting():
    assert set(TASKS) == set(SMALL) | {"byte_lm"}


# -- the contract shared by every generator -----------------------------------------------------

@pytest.mark.parametrize("kind", SYNTHETIC)
def test_format_shapes_dtypes_and_token_ranges(kind):
    task = SMALL[kind]
    data = task.generate(32, seed=0)
    data.check()
    assert data.inputs.shape == (32, task.seq_len) and len(data) == 32
    assert data.vocab_size == task.vocab_size
    assert int(data.inputs.max()) < task.vocab_size and int(data.targets.max()) < task.vocab_size
    assert data.loss_mask.any(dim=1).all(), "every example trains on something"
    assert torch.equal(data.loss_mask, data.score_mask), "MAD and MQAR train where they score"


@pytest.mark.parametrize("kind", [k for k in SYNTHETIC if k != "compression"])
def test_targets_are_the_next_input_token(kind):
    data = SMALL[kind].generate(16, seed=1)
    assert torch.equal(data.targets[:, :-1], data.inputs[:, 1:])


@pytest.mark.parametrize("kind", SYNTHETIC)
def test_same_seed_same_data_other_seed_other_data(kind):
    task = SMALL[kind]
    first, again, other = task.generate(16, 5), task.generate(16, 5), task.generate(16, 6)
    assert first.equals(again)
    assert not torch.equal(first.inputs, other.inputs)


@pytest.mark.parametrize("kind", SYNTHETIC)
def test_train_and_test_are_different_streams_and_disjoint(kind):
    task = SMALL[kind]
    train, test = load_splits(task, 200, 50, seed=3, cache=False)
    assert not torch.equal(train.inputs[:50], test.inputs)
    train_rows = {row.numpy().tobytes() for row in train.inputs}
    assert not any(row.numpy().tobytes() in train_rows for row in test.inputs)
    # The test stream of seed 3 is not the train stream of any nearby seed either.
    for seed in range(10):
        assert not torch.equal(task.generate(50, seed, "train").inputs, test.inputs)


def test_drop_overlap_removes_test_rows_seen_in_training():
    train = SMALL["mqar"].generate(10, 0)
    test = SMALL["mqar"].generate(6, 0, "test")
    mixed = TaskData(torch.cat([test.inputs, train.inputs[:2]]),
                     torch.cat([test.targets, train.targets[:2]]),
                     torch.cat([test.loss_mask, train.loss_mask[:2]]),
                     torch.cat([test.score_mask, train.score_mask[:2]]), test.vocab_size)
    kept = drop_overlap(train, mixed)
    assert len(kept) == 6 and torch.equal(kept.inputs, test.inputs)


def test_bad_arguments_name_the_field():
    with pytest.raises(TaskError, match="n_examples"):
        SMALL["mqar"].generate(0, 0)
    with pytest.raises(TaskError, match="seed"):
        SMALL["mqar"].generate(4, -1)
    with pytest.raises(TaskError, match="split"):
        SMALL["mqar"].generate(4, 0, "validation")


# -- MQAR ---------------------------------------------------------------------------------------

def check_mqar(task: MQAR, data: TaskData) -> None:
    pairs, half = task.num_kv_pairs, task.vocab_size // 2
    for inputs, targets, mask, scored in zip(data.inputs, data.targets, data.loss_mask,
                                             data.score_mask):
        keys, values = inputs[0:2 * pairs:2], inputs[1:2 * pairs:2]
        assert (keys < half).all() and (values >= half).all(), "keys low half, values high half"
        assert len(set(keys.tolist())) == pairs and len(set(values.tolist())) == pairs
        value_of = dict(zip(keys.tolist(), values.tolist()))
        positions = mask.nonzero().flatten()
        assert torch.equal(mask, scored)
        assert (positions % 2 == 0).all() and (positions >= 2 * pairs).all()
        assert sorted(inputs[positions].tolist()) == sorted(keys.tolist()), "each key once"
        assert [value_of[k] for k in inputs[positions].tolist()] == targets[positions].tolist()


def test_mqar_format_masks_and_queries():
    task = MQAR(seq_len=128, num_kv_pairs=8, vocab_size=64)
    data = task.generate(64, seed=0)
    check_mqar(task, data)
    assert (data.loss_mask.sum(dim=1) == 8).all(), "loss only on the 8 query positions"
    # Outside the kv block and the queries the tokens are noise from the whole vocabulary.
    assert len(set(data.inputs[:, 16:][~data.loss_mask[:, 16:]].tolist())) > 48


@settings(max_examples=25, deadline=None)
@given(pairs=st.integers(1, 12), extra=st.integers(0, 40), vocab_extra=st.integers(0, 50),
       seed=st.integers(0, 2**32))
def test_mqar_format_holds_for_any_valid_size(pairs, extra, vocab_extra, seed):
    task = MQAR(seq_len=4 * pairs + extra, num_kv_pairs=pairs, vocab_size=2 * pairs + vocab_extra)
    data = task.generate(8, seed)
    data.check()
    check_mqar(task, data)


def test_mqar_needs_four_tokens_per_pair():
    MQAR(seq_len=16, num_kv_pairs=4)
    with pytest.raises(ValueError, match=r"num_kv_pairs: needs seq_len >= 4 \* num_kv_pairs"):
        MQAR(seq_len=15, num_kv_pairs=4)
    with pytest.raises(ValueError, match="vocab_size"):
        MQAR(seq_len=64, num_kv_pairs=8, vocab_size=15)


def test_mqar_difficulty_presets():
    sizes = [(t.seq_len, t.num_kv_pairs) for t in (MQAR.preset(level) for level in range(1, 5))]
    assert sizes == list(MQAR_DIFFICULTIES) == [(64, 4), (128, 8), (256, 16), (512, 64)]
    check_mqar(MQAR.preset(4), MQAR.preset(4).generate(4, 0))


def query_slots(task: MQAR, data: TaskData) -> np.ndarray:
    positions = data.loss_mask.nonzero()[:, 1].numpy()
    return (positions - 2 * task.num_kv_pairs) // 2


def test_mqar_gaps_follow_the_power_law():
    # One query: the slot's distribution is exactly p(g) ~ g^(a-1).
    task = MQAR(seq_len=64, num_kv_pairs=1, vocab_size=16)
    counts = np.bincount(query_slots(task, task.generate(20_000, 0)), minlength=task.query_slots)
    expected = task.gap_weights()
    assert expected[0] > 10 * expected[-1]
    assert np.abs(counts / counts.sum() - expected).max() < 0.015


def test_mqar_gaps_are_heavy_toward_short_gaps():
    task = MQAR(seq_len=256, num_kv_pairs=16, vocab_size=64)
    slots = query_slots(task, task.generate(500, 0))
    quarter = task.query_slots // 4
    first, last = np.mean(slots < quarter), np.mean(slots >= task.query_slots - quarter)
    assert first > 0.4 and first > 3 * last
    # a = 1 is the uniform distribution: the heavy head comes from the power law.
    uniform = MQAR(seq_len=256, num_kv_pairs=16, vocab_size=64, power_a=1.0)
    slots = query_slots(uniform, uniform.generate(500, 0))
    assert abs(np.mean(slots < quarter) - np.mean(slots >= task.query_slots - quarter)) < 0.05


# -- MAD ----------------------------------------------------------------------------------------

def reference_recall_mask(inputs: list[int], n_keys: int, kv_vocab: int) -> list[bool]:
    """A key position is scored when that key was shown before at a key position."""
    seen, mask = set(), []
    for position, token in enumerate(inputs):
        is_key = position % 2 == 0 and token < n_keys
        mask.append(is_key and token in seen)
        if is_key:
            seen.add(token)
    return mask


@pytest.mark.parametrize("task", [InContextRecall(), NoisyRecall()], ids=lambda t: t.kind)
def test_recall_scores_values_of_keys_seen_before(task):
    data = task.generate(32, seed=0)
    n_keys = task.n_keys
    for inputs, targets, mask in zip(data.inputs.tolist(), data.targets.tolist(),
                                     data.loss_mask.tolist()):
        assert mask == reference_recall_mask(inputs, n_keys, task.kv_vocab_size)
        value_of = {}
        for position in range(0, len(inputs) - 1, 2):
            key, value = inputs[position], inputs[position + 1]
            if key < n_keys:
                assert n_keys <= value < task.kv_vocab_size
                assert value_of.setdefault(key, value) == value, "one value per key"
                assert targets[position] == value


def test_recall_baselines_are_mads():
    assert (InContextRecall().seq_len, InContextRecall().vocab_size) == (128, 16)
    noisy = NoisyRecall()
    assert (noisy.kv_vocab_size, noisy.noise_vocab_size, noisy.noise_fraction) == (16, 16, 0.2)
    data = noisy.generate(200, seed=0)
    is_noise = data.inputs[:, 0::2] >= 16
    assert abs(is_noise.float().mean().item() - 0.2) < 0.02
    assert not data.loss_mask[:, 0::2][is_noise].any()
    assert not (InContextRecall().generate(8, 0).inputs >= 16).any()


def test_fuzzy_recall_keys_values_and_masks():
    task = FuzzyRecall()
    half = task.kv_vocab_size // 2
    data = task.generate(32, seed=0)
    key_lengths, value_lengths = set(), set()
    for inputs, targets, mask in zip(data.inputs.tolist(), data.targets.tolist(),
                                     data.loss_mask.tolist()):
        # Runs of key tokens and of value tokens alternate, starting with a key.
        runs, start = [], 0
        for _, run in groupby(inputs, key=lambda token: token < half):
            run = tuple(run)
            runs.append((start, run))
            start += len(run)
        assert inputs[0] < half
        expected, value_of = [False] * len(inputs), {}
        for (_, key), (value_start, value) in zip(runs[0::2], runs[1::2]):
            if key not in value_of:
                value_of[key] = value
                continue
            full = value_of[key]
            assert value == full[:len(value)], "one value per key"
            for offset, token in enumerate(full):
                if value_start - 1 + offset < len(inputs):
                    expected[value_start - 1 + offset] = True
                    assert targets[value_start - 1 + offset] == token
        if len(runs) % 2 == 1 and runs[-1][1] in value_of:  # the row ends right after a key
            expected[-1] = True
            assert targets[-1] == value_of[runs[-1][1]][0]
        assert mask == expected
        keys = list(value_of)
        assert not any(a != b and a == b[:len(a)] for a in keys for b in keys), "prefix-free"
        key_lengths |= {len(key) for key in keys}
        value_lengths |= {len(value) for value in value_of.values()}
    assert key_lengths == value_lengths == {1, 2, 3}


def test_selective_copying_copies_the_scattered_tokens_in_order():
    task = SelectiveCopying()
    assert (task.seq_len, task.vocab_size, task.n_copy) == (256, 16, 16)
    data = task.generate(16, seed=0)
    region = task.seq_len - task.n_copy
    for inputs, targets, mask in zip(data.inputs, data.targets, data.loss_mask):
        scattered = inputs[:region][inputs[:region] != task.blank]
        assert len(scattered) == task.n_copy and (scattered < task.blank).all()
        assert inputs[region] == task.separator
        assert torch.equal(targets[mask], scattered)
        assert mask.nonzero().flatten().tolist() == list(range(region, task.seq_len))


def test_compression_reconstructs_the_input_from_the_marker_on():
    task = Compression()
    assert (task.n_tokens, task.vocab_size, task.seq_len) == (32, 16, 64)
    data = task.generate(16, seed=0)
    tokens = data.inputs[:, :32]
    assert (tokens < task.marker).all() and (data.inputs[:, 32] == task.marker).all()
    assert (data.inputs[:, 33:] == task.slot).all(), "no teacher forcing after the marker"
    assert torch.equal(data.targets[:, 32:], tokens)
    assert data.loss_mask[:, 32:].all() and not data.loss_mask[:, :32].any()


def test_memorization_uses_one_fixed_map_for_every_split_and_seed():
    task = Memorization()
    assert (task.seq_len, task.vocab_size) == (32, 256)
    value_map = task.value_map()
    assert sorted(value_map.tolist()) == list(range(128, 256))
    assert not np.array_equal(value_map, Memorization(map_seed=1).value_map())
    for seed, split in [(0, "train"), (0, "test"), (7, "train")]:
        data = task.generate(32, seed, split)
        assert torch.equal(data.targets[data.loss_mask],
                           torch.from_numpy(value_map)[data.inputs[data.loss_mask]])
        assert data.loss_mask[:, 0::2].all() and not data.loss_mask[:, 1::2].any()
        keys = data.inputs[:, 0::2]
        assert all(len(set(row.tolist())) == len(row) for row in keys), "no in-context repeats"


# -- byte-level LM ------------------------------------------------------------------------------

def test_default_corpus_is_the_standard_library_and_splits_deterministically():
    corpus = ByteLM().corpus()
    assert corpus.files and all(name.endswith(".py") for name in corpus.files)
    assert corpus.files == tuple(sorted(corpus.files))
    assert len(corpus.train) + len(corpus.test) == ByteLM().max_bytes
    assert 0.03 < len(corpus.test) / ByteLM().max_bytes < 0.2
    load_corpus.cache_clear()
    again = ByteLM().corpus()
    assert again is not corpus and again.fingerprint == corpus.fingerprint
    assert np.array_equal(again.test, corpus.test)


def test_corpus_split_depends_on_content_not_names(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    texts = [f"text number {i} " * 50 for i in range(60)]
    for i, text in enumerate(texts):
        (folder / f"a{i:02d}.txt").write_text(text)
    (folder / "z_copy.txt").write_text(texts[0])
    corpus = ByteLM(source=str(folder), block_bytes=4096).corpus()
    held_out = {text for text in texts if text.encode() in corpus.test.tobytes()}
    assert held_out and len(held_out) < len(texts)
    # Renaming every file changes the order but not which texts are held out; so does a copy.
    for i in range(60):
        (folder / f"a{i:02d}.txt").rename(folder / f"b{59 - i:02d}.txt")
    load_corpus.cache_clear()
    renamed = ByteLM(source=str(folder), block_bytes=4096).corpus()
    assert renamed.files != corpus.files
    assert {text for text in texts if text.encode() in renamed.test.tobytes()} == held_out
    copies = [part.tobytes().count(texts[0].encode()) for part in (renamed.train, renamed.test)]
    assert sorted(copies) == [0, 2], "identical files land on the same side"


def test_byte_lm_windows_metrics_and_globs(text_folder):
    task = ByteLM(source=str(text_folder / "*.txt"), seq_len=32, held_out_fraction=0.3)
    train, test = task.generate(16, 0, "train"), task.generate(16, 0, "test")
    corpus = task.corpus()
    assert train.token_unit == "byte" and train.vocab_size == 256
    assert torch.equal(train.targets[:, :-1], train.inputs[:, 1:])
    assert train.loss_mask.all() and train.score_mask.all()
    for window in test.inputs:
        assert bytes(window.tolist()) in corpus.test.tobytes()
    metrics = score(torch.zeros(16, 32, 256), test)
    assert metrics["bpb"] == pytest.approx(8.0) and metrics["loss"] == pytest.approx(math.log(256))


def test_missing_or_empty_corpus_names_the_path(tmp_path):
    missing = tmp_path / "no_such_corpus"
    with pytest.raises(TaskError, match="no_such_corpus: no such file") as error:
        ByteLM(source=str(missing)).generate(2, 0)
    assert "\n" not in str(error.value)
    with pytest.raises(TaskError, match="no files found"):
        ByteLM(source=str(tmp_path / "*.nothing")).generate(2, 0)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.txt").write_text("")
    with pytest.raises(TaskError, match=re.escape(f"{empty}: the corpus is empty")):
        ByteLM(source=str(empty)).generate(2, 0)
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("tiny")
    with pytest.raises(TaskError, match="fewer than seq_len"):
        ByteLM(source=str(tiny), seq_len=100).generate(2, 0)


# -- cache --------------------------------------------------------------------------------------

@pytest.mark.parametrize("task", [SMALL["mqar"], SMALL["fuzzy_recall"], ByteLM(seq_len=16)],
                         ids=lambda t: t.kind)
def test_cache_returns_what_generation_returns(task, isolated_cache):
    fresh = task.generate(20, 4, "test")
    first = cached_generate(task, 20, 4, "test")
    path = cache_path(task, 20, 4, "test")
    assert path.parent == isolated_cache and path.is_file()
    stamp = path.stat().st_mtime_ns
    second = cached_generate(task, 20, 4, "test")
    assert path.stat().st_mtime_ns == stamp, "the second call reads the file"
    assert first.equals(fresh) and second.equals(fresh)
    assert [p.name for p in isolated_cache.iterdir()] == [path.name], "no temporary files left"


def test_cache_key_covers_settings_size_seed_and_split():
    task = SMALL["mqar"]
    keys = {cache_key(task, 10, 0, "train"), cache_key(task, 11, 0, "train"),
            cache_key(task, 10, 1, "train"), cache_key(task, 10, 0, "test"),
            cache_key(MQAR(seq_len=64, num_kv_pairs=4, vocab_size=64, power_a=0.5), 10, 0, "train")}
    assert len(keys) == 5
    assert cache_key(MQAR(power_a=1), 10, 0, "train") == cache_key(MQAR(power_a=1.0), 10, 0, "train")


@pytest.mark.parametrize("damage", ["garbage", "truncate", "flip"])
def test_cache_regenerates_a_corrupted_file(damage):
    task = SMALL["in_context_recall"]
    fresh = cached_generate(task, 30, 2)
    path = cache_path(task, 30, 2, "train")
    raw = bytearray(path.read_bytes())
    if damage == "garbage":
        raw = bytearray(b"not a torch file")
    elif damage == "truncate":
        raw = raw[:len(raw) // 2]
    else:  # one token changed inside the stored inputs: only the checksum can tell
        payload = torch.load(path, weights_only=True)
        payload["inputs"][0, 0] = (payload["inputs"][0, 0] + 1) % task.vocab_size
        torch.save(payload, path)
        raw = bytearray(path.read_bytes())
    path.write_bytes(bytes(raw))
    again = cached_generate(task, 30, 2)
    assert again.equals(fresh)
    assert cached_generate(task, 30, 2).equals(fresh), "the rewritten file is valid"
    assert torch.load(path, weights_only=True)["digest"]


def test_unwritable_cache_still_returns_data(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("HNAS_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="cannot write"):
        data = cached_generate(SMALL["mqar"], 4, 0)
    assert data.equals(SMALL["mqar"].generate(4, 0))


def test_load_splits_cached_equals_uncached():
    task = SMALL["selective_copying"]
    cached = load_splits(task, 40, 10, seed=1)
    fresh = load_splits(task, 40, 10, seed=1, cache=False)
    assert all(a.equals(b) for a, b in zip(cached, fresh))


# -- suites -------------------------------------------------------------------------------------

def test_presets_load_by_name():
    assert set(PRESETS) == {"quick", "mad", "mqar", "lm", "capacity", "recall64"}
    quick = load_suite("quick")
    assert [e.task.kind for e in quick] == ["mqar", "in_context_recall"]
    assert quick.entry("mqar_64x4").task.seq_len == 64
    assert [e.task.kind for e in load_suite("mad")] == [
        "in_context_recall", "noisy_recall", "fuzzy_recall", "selective_copying",
        "compression", "memorization"]
    assert [(e.task.seq_len, e.task.num_kv_pairs) for e in load_suite("mqar")] == list(
        MQAR_DIFFICULTIES)
    assert [e.task.kind for e in load_suite("lm")] == ["byte_lm"]
    with pytest.raises(SuiteError, match="nope: not a suite preset"):
        load_suite("nope")


def test_capacity_suite_overflows_small_recurrent_states():
    """The `capacity` preset's MQAR holds more pairs than one recurrent layer of the presets'
    width can store (K pairs of d-wide keys and values: 2 * K * d values), while one attention
    layer's cache at the task's length holds them; its data are what it says."""
    from search_spaces import load_arch
    from search_spaces.cost import estimate

    suite = load_suite("capacity")
    (entry,) = suite.entries
    task = entry.task
    assert (task.kind, task.seq_len, task.num_kv_pairs, task.vocab_size) == ("mqar", 256, 32, 256)
    assert (entry.n_train, entry.n_test, suite.difficulty) == (32768, 512, "hard")

    def per_layer_values(preset: str) -> float:
        arch = load_arch(preset)
        return estimate(arch, context=task.seq_len, dtype="fp32").cache_bytes / 4 / len(
            arch.layers)

    needed = 2 * task.num_kv_pairs * load_arch("mamba").d_model
    assert per_layer_values("hawk") < per_layer_values("mamba") < needed
    assert per_layer_values("transformer") >= needed
    train, test = load_splits(task, 8, 4, seed=0, cache=False)
    assert train.inputs.shape == (8, 256)
    assert (train.score_mask.sum(dim=1) == 32).all()


def test_recall64_preset_is_the_fidelity_suite_and_overflows_the_smallest_states():
    """The `recall64` preset trains exactly the task the fidelity runs used
    (benchmarks/suites/recall64.yaml), and its 8 pairs of 64-wide keys and values need more than
    an RG-LRU layer's state at the presets' width, while an attention layer's cache holds them."""
    from pathlib import Path

    from search_spaces import load_arch
    from search_spaces.cost import estimate

    preset = load_suite("recall64")
    benchmark = load_suite(Path(__file__).resolve().parents[1] / "benchmarks" / "suites" /
                           "recall64.yaml")
    assert [e.to_dict() for e in preset] == [e.to_dict() for e in benchmark]
    (entry,) = preset.entries
    task = entry.task
    assert (task.seq_len, task.num_kv_pairs, task.vocab_size) == (64, 8, 64)
    assert (entry.n_train, entry.n_test) == (32768, 1024)

    def per_layer_values(name: str) -> float:
        arch = load_arch(name)
        return estimate(arch, context=task.seq_len, dtype="fp32").cache_bytes / 4 / len(
            arch.layers)

    needed = 2 * task.num_kv_pairs * load_arch("hawk").d_model
    assert per_layer_values("hawk") < needed <= per_layer_values("transformer")
    train, _ = load_splits(task, 8, 4, seed=0, cache=False)
    assert train.inputs.shape == (8, 64)
    assert (train.score_mask.sum(dim=1) == 8).all()


def test_quick_suite_data_are_small_and_cached(isolated_cache):
    quick = load_suite("quick")
    for entry in quick:
        train, test = quick.data(entry.name)
        assert len(train) == entry.n_train and len(test) == entry.n_test
        assert entry.task.seq_len <= 64
    assert len(list(isolated_cache.iterdir())) == 4


SUITE_YAML = """
name: custom
difficulty: easy
seed: 3
tasks:
  - task: mqar
    weight: 2
    n_train: 64
    n_test: 16
    settings: {seq_len: 32, num_kv_pairs: 2, vocab_size: 32}
  - task: byte_lm
    name: lm_small
    settings: {seq_len: 32}
"""


def test_suite_from_yaml_round_trips(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_YAML)
    suite = load_suite(str(path))
    assert (suite.name, suite.difficulty, suite.seed) == ("custom", "easy", 3)
    assert suite.entry("mqar_32x2").weight == 2.0
    assert suite.entry("lm_small").task == ByteLM(seq_len=32)
    assert Suite.from_dict(suite.to_dict()).fingerprint() == suite.fingerprint()
    assert load_suite("quick").fingerprint() != suite.fingerprint()


@pytest.mark.parametrize("edit, where", [
    (("seed: 3", "seeds: 3"), "seeds: unknown key"),
    (("difficulty: easy", "difficulty: extreme"), "difficulty:"),
    (("weight: 2", "weight: -1"), "tasks[0].weight:"),
    (("weight: 2", "wieght: 2"), "tasks[0].wieght: unknown key"),
    (("task: mqar", "task: mqr"), "tasks[0].task: unknown task 'mqr'"),
    (("num_kv_pairs: 2", "num_kv_pair: 2"), "tasks[0].settings.num_kv_pair: unknown setting"),
    (("seq_len: 32, num", "seq_len: long, num"), "tasks[0].settings.seq_len:"),
    (("num_kv_pairs: 2", "num_kv_pairs: 9"), "tasks[0].settings.num_kv_pairs: needs seq_len"),
    (("n_test: 16", "n_test: 0"), "tasks[0].n_test:"),
    (("name: lm_small", "name: mqar_32x2"), "tasks[1].name: 'mqar_32x2' is used twice"),
    (("{seq_len: 32}", "{seq_len: 32, source: 7}"), "tasks[1].settings.source:"),
])
def test_suite_errors_are_one_line_and_name_the_key(tmp_path, edit, where):
    old, new = edit
    assert old in SUITE_YAML
    path = tmp_path / "bad.yaml"
    path.write_text(SUITE_YAML.replace(old, new, 1))
    with pytest.raises(SuiteError) as error:
        load_suite(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert where in message, message


@pytest.mark.parametrize("block, error", [
    ("training: {steps: 0}", "training.steps:"),
    ("training: {steps: 300, lr: -0.1}", "training.lr:"),
    ("training: {stpes: 300}", "training.stpes: unknown key (valid: steps, lr, schedule, warmup)"),
    ("training: {schedule: linear}", "training.schedule: expected one of cosine, wsd, constant"),
    ("training: {warmup: 1.5}", "training.warmup:"),
])
def test_suite_training_block_errors_name_the_key(tmp_path, block, error):
    path = tmp_path / "bad.yaml"
    path.write_text(SUITE_YAML + block + "\n")
    with pytest.raises(SuiteError) as raised:
        load_suite(path)
    assert "\n" not in str(raised.value) and error in str(raised.value), str(raised.value)


def test_a_suite_carries_the_training_it_was_calibrated_at(tmp_path):
    """recall64 brings the budget its fidelity was measured at; a YAML suite may declare its
    own; neither changes the fingerprint, which is about the tasks and their data."""
    assert load_suite("recall64").training == SuiteTraining(steps=600, lr=3e-3,
                                                            schedule="constant", warmup=160 / 600)
    assert load_suite("quick").training == SuiteTraining(steps=100)
    assert load_suite("quick").training.budget_settings() == {}
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_YAML)
    plain = load_suite(path)
    path.write_text(SUITE_YAML + "training: {steps: 250, lr: 0.002, schedule: wsd, warmup: 0.2}\n")
    calibrated = load_suite(path)
    assert calibrated.training == SuiteTraining(steps=250, lr=0.002, schedule="wsd", warmup=0.2)
    assert calibrated.training.budget_settings() == {"lr": 0.002, "schedule": "wsd",
                                                     "warmup": 0.2}
    assert calibrated.fingerprint() == plain.fingerprint()
    assert Suite.from_dict(calibrated.to_dict()) == calibrated
    assert "training" not in plain.to_dict()  # studies stored before the field read the same


def test_suite_quality_is_the_weighted_mean_accuracy(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(SUITE_YAML)
    suite = load_suite(path)
    metrics = {"mqar_32x2": {"accuracy": 0.9, "loss": 0.3},
               "lm_small": {"accuracy": 0.6, "loss": 1.4, "bpb": 1.4 / math.log(2)}}
    assert suite.quality(metrics) == pytest.approx((2 * 0.9 + 0.6) / 3)
    summary = suite.summary(metrics)
    assert summary["lm_small/bpb"] == pytest.approx(2.0198, abs=1e-3)
    assert "mqar_32x2/bpb" not in summary and summary["mqar_32x2/loss"] == 0.3
    with pytest.raises(KeyError, match="lm_small"):
        suite.quality({"mqar_32x2": metrics["mqar_32x2"]})


# -- metrics ------------------------------------------------------------------------------------

def perfect_logits(data: TaskData, vocab: int | None = None) -> torch.Tensor:
    return 20.0 * torch.nn.functional.one_hot(data.targets, vocab or data.vocab_size).float()


@pytest.mark.parametrize("kind", SYNTHETIC)
def test_score_of_perfect_and_uniform_logits(kind):
    data = SMALL[kind].generate(8, 0)
    perfect = score(perfect_logits(data), data)
    assert perfect["accuracy"] == 1.0 and perfect["loss"] < 1e-6
    uniform = score(torch.zeros(8, data.seq_len, data.vocab_size), data)
    assert uniform["loss"] == pytest.approx(math.log(data.vocab_size))
    assert uniform["bits_per_token"] == pytest.approx(math.log2(data.vocab_size))
    assert uniform["n_scored"] == int(data.score_mask.sum()) and "bpb" not in uniform


def test_score_counts_only_masked_positions():
    data = SMALL["mqar"].generate(8, 0)
    logits = perfect_logits(data)
    logits[~data.score_mask] = torch.roll(logits[~data.score_mask], 1, dims=-1)  # wrong there
    assert score(logits, data)["accuracy"] == 1.0
    logits[data.score_mask] = torch.roll(logits[data.score_mask], 1, dims=-1)
    assert score(logits, data)["accuracy"] == 0.0
    wider = score(perfect_logits(data, vocab=data.vocab_size + 8), data)
    assert wider["accuracy"] == 1.0, "a model vocabulary larger than the task's is fine"
    with pytest.raises(ValueError, match="logits"):
        score(torch.zeros(8, data.seq_len, data.vocab_size - 1), data)


def test_batches_merge_to_the_whole_and_the_loss_is_differentiable():
    data = SMALL["noisy_recall"].generate(12, 0)
    logits = torch.randn(12, data.seq_len, data.vocab_size, generator=torch.Generator().manual_seed(0))
    whole = score(logits, data)
    merged = merge_scores([score(logits[:5], data[:5]), score(logits[5:], data[5:])])
    assert merged["loss"] == pytest.approx(whole["loss"])
    assert merged["accuracy"] == pytest.approx(whole["accuracy"])
    logits.requires_grad_(True)
    loss = masked_cross_entropy(logits, data.targets, data.loss_mask)
    loss.backward()
    assert loss.item() == pytest.approx(whole["loss"], rel=1e-5)
    assert (logits.grad[~data.loss_mask] == 0).all() and logits.grad.abs().sum() > 0
