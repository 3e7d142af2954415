"""Length bucketing: every example once per epoch, less padding, deterministic, order-free evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from hrrformer.batching import bucketed_batches, epoch_batches, evaluation_batches, length_keys, plain_batches
from hrrformer.data.base import TokenDataset
from hrrformer.data.common import LazyFiles, Packed, PairSequences


def _padded_tokens(batches: list[list[int]], keys: np.ndarray) -> int:
    return sum(len(b) * int(keys[b].max()) for b in batches)


def test_bucketed_batches_cover_every_index_once_and_cut_padding() -> None:
    rng = np.random.default_rng(0)
    keys = rng.integers(10, 4000, size=1000)
    indices = rng.permutation(1000).tolist()
    bucketed = bucketed_batches(indices, keys, 32, pool_batches=10, seed=3)
    assert sorted(i for b in bucketed for i in b) == list(range(1000))
    assert all(1 <= len(b) <= 32 for b in bucketed)
    plain = plain_batches(indices, 32)
    assert _padded_tokens(bucketed, keys) < 0.7 * _padded_tokens(plain, keys)


def test_bucketed_batches_are_deterministic_in_the_seed_and_shuffled() -> None:
    keys = np.arange(640)
    indices = list(range(640))
    first = bucketed_batches(indices, keys, 8, pool_batches=80, seed=1)
    assert first == bucketed_batches(indices, keys, 8, pool_batches=80, seed=1)
    assert first != bucketed_batches(indices, keys, 8, pool_batches=80, seed=2)
    # one pool of sorted keys: batches hold consecutive keys, in shuffled order
    assert all(b == list(range(b[0], b[0] + 8)) for b in first)
    assert [b[0] for b in first] != sorted(b[0] for b in first)


def test_pool_of_one_batch_is_plain_batching() -> None:
    keys = np.arange(100)[::-1].copy()
    assert bucketed_batches(range(100), keys, 7, pool_batches=1, seed=0) == plain_batches(range(100), 7)


def test_data_parallel_ranks_get_equal_batch_counts() -> None:
    keys = np.random.default_rng(1).integers(1, 100, size=203)
    dataset = TokenDataset(Packed.from_arrays([np.ones(k) for k in keys]), [0] * len(keys))
    counts = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=True, seed=0)
        batches = epoch_batches(sampler, 8, epoch=0, skip=0, keys=length_keys(dataset), bucket=4)
        counts.append(len(batches))
        assert sum(len(b) for b in batches) == len(sampler)
    assert counts[0] == counts[1]


def test_evaluation_batches_sorted_and_complete() -> None:
    keys = np.array([5, 1, 4, 2, 3])
    batches = evaluation_batches(range(5), keys, 2)
    assert batches == [[1, 3], [4, 2], [0]]


def test_length_keys_of_each_store(tmp_path) -> None:
    packed = Packed.from_arrays([np.ones(3), np.ones(7), np.ones(1)])
    assert length_keys(TokenDataset(packed, [0, 1, 0])).tolist() == [3, 7, 1]
    pairs = PairSequences(packed, np.array([0, 1]), np.array([2, 2]))
    assert length_keys(TokenDataset(pairs, [0, 1])).tolist() == [4, 8]
    plain_pairs = PairSequences([torch.ones(3), torch.ones(2)], np.array([0]), np.array([1]))
    assert length_keys(TokenDataset(plain_pairs, [0])) is None
    files = []
    for size in (10, 500, 50):
        path = tmp_path / f"f{size}"
        path.write_bytes(b"x" * size)
        files.append(path)
    reader = lambda p: np.frombuffer(p.read_bytes(), dtype=np.uint8)  # noqa: E731
    assert length_keys(TokenDataset(LazyFiles(files, reader, max_len=100), [0, 0, 0])).tolist() == [10, 100, 50]
    assert length_keys(TokenDataset(LazyFiles(files, reader), [0, 0, 0])) is None  # decoded whole: unknown
    assert length_keys(TokenDataset([torch.ones(2)], [0])) is None


def test_evaluation_does_not_depend_on_batch_order(tmp_path) -> None:
    from hrrformer.model import Hrrformer, HrrformerConfig
    from hrrformer.train import evaluate

    rng = np.random.default_rng(0)
    arrays = [rng.integers(1, 10, size=int(n)) for n in rng.integers(1, 60, size=37)]
    dataset = TokenDataset(Packed.from_arrays(arrays), rng.integers(0, 3, size=37).tolist())
    torch.manual_seed(0)
    model = Hrrformer(HrrformerConfig(vocab_size=10, num_classes=3, max_len=64, dim=8, heads=2, layers=1, mlp_dim=8))
    sorted_run = evaluate(model, dataset, batch_size=4, device=torch.device("cpu"), num_classes=3)
    unsorted = TokenDataset(list(dataset.sequences), dataset.labels)  # no lengths: batches in order
    assert length_keys(unsorted) is None
    plain_run = evaluate(model, unsorted, batch_size=4, device=torch.device("cpu"), num_classes=3)
    assert sorted_run["confusion_matrix"] == plain_run["confusion_matrix"]
    assert sorted_run["loss"] == pytest.approx(plain_run["loss"], rel=1e-5)


def test_batches_are_padded_to_a_multiple_capped_at_max_len() -> None:
    from hrrformer.data.base import collate, pad_sequences

    seqs = [torch.ones(5, dtype=torch.long), torch.ones(130, dtype=torch.long)]
    tokens, mask = pad_sequences(seqs, multiple=128)
    assert tokens.shape == (2, 256) and mask[0, 5:].all() and not mask[1, :130].any() and mask[1, 130:].all()
    assert pad_sequences(seqs, multiple=128, cap=200)[0].shape == (2, 200)  # capped at max_len
    assert pad_sequences(seqs, multiple=128, cap=100)[0].shape == (2, 130)  # never below the longest
    assert pad_sequences(seqs)[0].shape == (2, 130)
    with pytest.raises(ValueError, match="multiple"):
        pad_sequences(seqs, multiple=0)
    batch = collate([((seqs[0], seqs[1]), 1), ((seqs[1], seqs[0]), 0)], pad_multiple=64)
    assert batch["tokens_a"].shape == (2, 192) and batch["tokens_b"].shape == (2, 192)


def test_padding_to_a_multiple_changes_no_logit() -> None:
    from hrrformer.data.base import collate
    from hrrformer.model import Hrrformer, HrrformerConfig

    torch.manual_seed(0)
    model = Hrrformer(HrrformerConfig(vocab_size=10, max_len=300, dim=8, heads=2, mlp_dim=8, dropout=0.0)).double()
    items = [(torch.randint(1, 10, (n,)), 0) for n in (7, 100, 33)]
    exact, rounded = collate(items), collate(items, pad_multiple=128, max_len=300)
    assert rounded["tokens"].shape[1] == 128
    torch.testing.assert_close(model(rounded["tokens"], rounded["mask"]), model(exact["tokens"], exact["mask"]))
