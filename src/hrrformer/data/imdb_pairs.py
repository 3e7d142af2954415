"""IMDB "same movie?" pairs: a real two-document retrieval task of the shape of LRA's AAN task.

Reads an aclImdb tree (folder or tar, see :mod:`hrrformer.data.text`) with
``{split}/urls_{pos,neg}.txt``: line *i* (from 0) of ``urls_pos.txt`` is the movie URL of the
positive review with id *i* (file ``<id>_<rating>.txt``), likewise for negatives. A pair is
labelled 1 when both reviews are of the same movie.

Movies (URLs) are split by ``seed`` into train/val/test (``val_fraction``, ``test_fraction``,
default 80/10/10), so no review and no movie appears in two splits. In each split,
``pairs_per_review`` × (number of reviews) pairs are drawn by ``seed``, exactly half of them
positive: a positive takes a review of a movie with at least two reviews and another review
of that movie; a negative takes any review and a review of another movie.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .base import DataError, TaskData, TokenDataset
from .common import (
    BYTE_VOCAB,
    BadInputs,
    Packed,
    PairSequences,
    check_options,
    decode_bytes,
    rng_for,
    split_indices,
)
from .text import CLASS_NAMES as POLARITIES
from .text import MAX_LEN, AclImdb, read_aclimdb

__all__ = ["decode", "load", "sample_pairs"]

decode = decode_bytes
_FILE = re.compile(r"(?:^|/)(?P<id>\d+)_(?P<rating>\d+)\.txt$")


def _movie_of_reviews(data: AclImdb, path: str | Path, bad: BadInputs) -> tuple[list[int], list[str]]:
    """(indices of usable reviews, their movie URLs)."""
    kept, movies = [], []
    for i, review in enumerate(data.reviews):
        polarity = POLARITIES[review.label]
        urls = data.urls.get((review.split, polarity))
        if urls is None:
            raise DataError(f"{path}: missing {data.root}{review.split}/urls_{polarity}.txt (the reviews' movie URLs)")
        match = _FILE.search(review.file)
        if match is None:
            bad("bad file name", f"{path}: {review.file} is not named <id>_<rating>.txt")
            continue
        review_id = int(match["id"])
        if review_id >= len(urls) or not urls[review_id].strip():
            bad("no movie URL", f"{path}: no URL for {review.file} on line {review_id} of urls_{polarity}.txt")
            continue
        kept.append(i)
        movies.append(urls[review_id].strip())
    return kept, movies


class _Groups:
    """Reviews grouped by movie, for drawing pairs (positions into the ``movie`` array)."""

    def __init__(self, movie: np.ndarray) -> None:
        self.n = len(movie)
        self.order = np.argsort(movie, kind="stable")  # (n,) reviews sorted by movie
        unique, self.start, self.count = np.unique(movie[self.order], return_index=True, return_counts=True)
        self.movies = len(unique)
        self.group = np.searchsorted(unique, movie)  # (n,) group of each review
        self.rank = np.empty(self.n, dtype=np.int64)
        self.rank[self.order] = np.arange(self.n)
        self.rank -= self.start[self.group]  # (n,) position of each review within its group
        self.eligible = np.flatnonzero(self.count[self.group] >= 2)  # reviews with a same-movie partner

    def positives(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random pairs of two different reviews of one movie."""
        a = rng.choice(self.eligible, n)
        g = self.group[a]
        k = rng.integers(0, self.count[g] - 1)
        return a, self.order[self.start[g] + k + (k >= self.rank[a])]

    def negatives(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random pairs of reviews of two different movies."""
        a = rng.integers(0, self.n, n)
        g = self.group[a]
        k = rng.integers(0, self.n - self.count[g])
        return a, self.order[np.where(k < self.start[g], k, k + self.count[g])]


def _distinct(a: np.ndarray, b: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` distinct unordered pairs among (a, b), topped up with repeats if there are fewer."""
    key = np.minimum(a, b) * (max(a.max(), b.max()) + 1) + np.maximum(a, b)
    first = np.sort(np.unique(key, return_index=True)[1])
    keep = np.concatenate([first, np.setdiff1d(np.arange(len(a)), first)])[:n]
    return a[keep], b[keep]


def sample_pairs(movie: np.ndarray, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``n_pairs`` pairs (a, b, label) of positions into ``movie`` (a movie id per review), half positive.

    Positives join two different reviews of one movie, negatives reviews of two movies. Pairs
    are distinct where the data allows, come shuffled, and which review is ``a`` is random.
    """
    empty = np.zeros(0, np.int64)
    if n_pairs == 0:
        return empty, empty, empty
    groups = _Groups(movie)
    n_pos, n_neg = n_pairs // 2, n_pairs - n_pairs // 2
    if (n_pos and not len(groups.eligible)) or groups.movies < 2:
        raise DataError(
            f"cannot draw balanced pairs from {groups.n} reviews of {groups.movies} movies: too few movies or reviews"
        )
    a_pos, b_pos = _distinct(*groups.positives(2 * n_pos, rng), n_pos) if n_pos else (empty, empty)
    a_neg, b_neg = _distinct(*groups.negatives(2 * n_neg, rng), n_neg)
    a, b = np.concatenate([a_pos, a_neg]), np.concatenate([b_pos, b_neg])
    labels = np.concatenate([np.ones(n_pos, np.int64), np.zeros(n_neg, np.int64)])
    swap = rng.random(len(a)) < 0.5
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    shuffle = rng.permutation(len(a))
    return a[shuffle], b[shuffle], labels[shuffle]


def load(
    path: str | Path,
    *,
    max_len: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    skip_bad: bool = False,
    limit: int | None = None,
    test_fraction: float = 0.1,
    pairs_per_review: float = 2.0,
) -> TaskData:
    """Build same-movie pairs from the aclImdb tree at ``path`` (train and, if present, test reviews).

    ``limit`` caps the pairs per split (still balanced).
    """
    check_options(val_fraction=val_fraction, test_fraction=test_fraction, limit=limit)
    if pairs_per_review <= 0:
        raise ValueError(f"pairs_per_review must be positive, got {pairs_per_review}")
    max_len = max_len or MAX_LEN
    bad = BadInputs(skip_bad)
    data = read_aclimdb(path, bad, max_bytes=max_len, with_urls=True)
    kept, urls = _movie_of_reviews(data, path, bad)
    if not kept:
        raise DataError(f"{path}: no reviews with movie URLs found")
    movie_names, movie = np.unique(np.array(urls), return_inverse=True)
    docs = Packed.from_bytes([data.reviews[i].text for i in kept])
    movie_splits = split_indices(
        np.zeros(len(movie_names)), seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )
    splits = {}
    for split, movies in zip(("train", "val", "test"), movie_splits):
        members = np.flatnonzero(np.isin(movie, movies))  # (m,) reviews of this split's movies
        n_pairs = round(pairs_per_review * len(members))
        n_pairs = n_pairs if limit is None else min(n_pairs, limit)
        try:
            a, b, labels = sample_pairs(movie[members], n_pairs, rng_for(seed, f"pairs-{split}"))
        except DataError as e:
            raise DataError(f"{path}: {split} split ({len(movies)} movies): {e}") from None
        splits[split] = TokenDataset(PairSequences(docs, members[a], members[b]), labels.tolist())
    return TaskData(
        name="imdb-pairs",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"] if test_fraction > 0 else None,
        vocab_size=BYTE_VOCAB,
        num_classes=2,
        max_len=max_len,
        pair=True,
        class_names=["different movie", "same movie"],
        skipped=bad.counts,
    )
