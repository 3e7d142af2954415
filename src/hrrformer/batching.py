"""Batches of similar length: padding is compute, so sort it away.

The collate pads a batch to its longest sequence. With random batches of variable-length data
(ListOps, Text, imdb-pairs, binaries) most of a batch is padding: the IMDB reviews have a median
of 981 bytes and a maximum of 4,000, so a random batch of 32 is padded to ~4,000 and three
quarters of its tokens are padding. Length bucketing (as in fairseq and tensor2tensor) keeps
the randomness of SGD and drops most of that padding:

1. take the shuffled indices of the epoch (the sampler's, so each data-parallel rank has its own);
2. cut them into pools of ``pool_batches × batch_size``;
3. sort each pool by length and cut it into batches;
4. shuffle the order of all batches (seeded by ``seed`` and the epoch, so a resumed run draws the
   same batches).

Padding is masked everywhere in the model (attention, pooling), so the result of a batch does
not depend on how much padding it has; only the cost does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["bucketed_batches", "epoch_batches", "evaluation_batches", "length_keys", "plain_batches"]


def length_keys(dataset: Dataset) -> np.ndarray | None:
    """A per-item number proportional to its padded cost (its length), or None when unknown.

    Datasets whose ``sequences`` store has a ``lengths()`` method (packed sequences, pairs,
    files) have them; others (or subsets) are treated as unsorted.
    """
    sequences = getattr(dataset, "sequences", None)
    lengths = getattr(sequences, "lengths", None)
    if lengths is None:
        return None
    try:
        keys = np.asarray(lengths(), dtype=np.int64)
    except AttributeError:  # a store that cannot tell (pairs of plain lists, files decoded whole)
        return None
    if len(keys) != len(dataset):
        return None
    return keys


def plain_batches(indices: Sequence[int], batch_size: int) -> list[list[int]]:
    """``indices`` cut in order into batches of ``batch_size`` (the last may be short)."""
    indices = list(indices)
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


def bucketed_batches(
    indices: Sequence[int],
    keys: np.ndarray,
    batch_size: int,
    *,
    pool_batches: int,
    seed: int,
) -> list[list[int]]:
    """Batches of similar ``keys[i]``: pools of ``pool_batches`` batches sorted, batch order shuffled.

    Every index appears exactly once. ``pool_batches <= 1`` gives ``plain_batches``.
    """
    if pool_batches <= 1:
        return plain_batches(indices, batch_size)
    indices = np.asarray(list(indices), dtype=np.int64)
    pool = pool_batches * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(indices), pool):
        chunk = indices[start : start + pool]
        chunk = chunk[np.argsort(keys[chunk], kind="stable")]
        batches.extend(plain_batches(chunk.tolist(), batch_size))
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def evaluation_batches(indices: Sequence[int], keys: np.ndarray | None, batch_size: int) -> list[list[int]]:
    """Batches for evaluation: all of ``indices`` sorted by length (metrics do not depend on order)."""
    indices = list(indices)
    if keys is not None:
        indices.sort(key=lambda i: int(keys[i]))
    return plain_batches(indices, batch_size)


def epoch_batches(
    sampler: DistributedSampler, batch_size: int, epoch: int, skip: int, keys: np.ndarray | None, bucket: int
) -> list[list[int]]:
    """This rank's batches of indices for ``epoch`` (length-bucketed when ``keys`` are known),
    less the first ``skip`` (already trained). Deterministic in (seed, epoch): resuming redraws them."""
    sampler.set_epoch(epoch)
    indices = list(sampler)
    if keys is None:
        batches = plain_batches(indices, batch_size)
    else:
        batches = bucketed_batches(indices, keys, batch_size, pool_batches=bucket, seed=sampler.seed + epoch)
    return batches[skip:]
