"""Shallow baselines: what a classifier gets without any attention between tokens.

Features are bags: the normalised token histogram (``unigram``) and the normalised histogram of
hashed adjacent-token pairs (``bigram``), each a ``scipy.sparse`` CSR matrix (one row per sequence,
rows summing to 1). :func:`fit_logistic` fits scikit-learn's multinomial
:class:`~sklearn.linear_model.LogisticRegression` on them, L2 chosen on the validation split. For
two-document tasks :func:`pair_rows` joins the two bags as ``[a, b, |a − b|, a ⊙ b]``. For ListOps,
:class:`FirstOperatorClassifier` predicts the label most frequent on train for each sequence's
first operator. ``python -m research.baselines`` runs them on the training splits of every task.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

__all__ = [
    "FEATURES",
    "L2_GRID",
    "FirstOperatorClassifier",
    "LogisticFit",
    "accuracy",
    "bigram_keys",
    "count_rows",
    "featurize",
    "first_operator",
    "fit_logistic",
    "majority_share",
    "pair_rows",
    "unigram_keys",
]

#: Fibonacci hashing multiplier (2^32 / golden ratio).
GOLDEN = np.uint64(2654435769)
#: The L2 values :func:`fit_logistic` tries by default (features scaled to unit RMS per column).
L2_GRID = (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
#: Tokens per chunk when counting (bounds the temporary arrays).
CHUNK_TOKENS = 4_000_000
#: The feature sets of :func:`featurize`.
FEATURES = ("unigram", "bigram")


def unigram_keys(tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """Each token is its own feature: keys in [0, vocab_size)."""
    return tokens.astype(np.int64, copy=False)


def bigram_keys(tokens: np.ndarray, vocab_size: int, buckets: int) -> np.ndarray:
    """Each adjacent pair (a, b) hashed into [0, buckets) (a power of two) by Fibonacci hashing of ``a·V + b``."""
    if buckets < 2 or buckets & (buckets - 1):
        raise ValueError(f"buckets must be a power of two ≥ 2, got {buckets}")
    bits = buckets.bit_length() - 1
    t = tokens.astype(np.uint64, copy=False)
    pair = t[:-1] * np.uint64(vocab_size) + t[1:]
    hashed = (pair * GOLDEN) & np.uint64(0xFFFFFFFF)
    return (hashed >> np.uint64(32 - bits)).astype(np.int64)


def count_rows(sequences: Sequence[np.ndarray], keys: Callable[[np.ndarray], np.ndarray], width: int) -> sp.csr_matrix:
    """Row i: the histogram of ``keys(sequences[i])`` over [0, width), divided by its total (L1 = 1).

    Counted :data:`CHUNK_TOKENS` tokens at a time. A sequence without keys (a bigram bag of one
    token) gives an empty row.
    """
    blocks: list[sp.csr_matrix] = []
    start = 0
    while start < len(sequences):
        stop, tokens = start, 0
        while stop < len(sequences) and (stop == start or tokens + len(sequences[stop]) <= CHUNK_TOKENS):
            tokens += len(sequences[stop])
            stop += 1
        per_doc = [keys(np.asarray(s)) for s in sequences[start:stop]]
        lengths = np.array([len(k) for k in per_doc], dtype=np.int64)
        rows = np.repeat(np.arange(stop - start), lengths)
        cols = np.concatenate(per_doc) if per_doc else np.zeros(0, np.int64)
        counts = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(stop - start, width))  # sums duplicates
        counts.sum_duplicates()
        blocks.append(sp.diags(1.0 / np.maximum(lengths, 1)) @ counts)
        start = stop
    if not blocks:
        return sp.csr_matrix((0, width))
    return sp.vstack(blocks, format="csr")


def pair_rows(a: sp.spmatrix, b: sp.spmatrix) -> sp.csr_matrix:
    """Features of two-document rows: ``[a, b, |a − b|, a ⊙ b]`` (width 4 × a's)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} and {b.shape}")
    return sp.hstack([a, b, abs(a - b), a.multiply(b)], format="csr")


def featurize(sequences: Sequence, features: str, vocab_size: int, buckets: int = 2**18) -> sp.csr_matrix:
    """Bag features of ``sequences`` (1-D integer arrays, or pairs of them for two-document tasks).

    ``unigram``: width ``vocab_size``; ``bigram``: width ``buckets``.
    """
    if features == "unigram":
        keys, width = partial(unigram_keys, vocab_size=vocab_size), vocab_size
    elif features == "bigram":
        keys, width = partial(bigram_keys, vocab_size=vocab_size, buckets=buckets), buckets
    else:
        raise ValueError(f"unknown features {features!r}; valid: {', '.join(FEATURES)}")
    if len(sequences) and isinstance(sequences[0], tuple | list):
        first = count_rows([s[0] for s in sequences], keys, width)
        second = count_rows([s[1] for s in sequences], keys, width)
        return pair_rows(first, second)
    return count_rows(sequences, keys, width)


def accuracy(predictions: np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Share of predictions equal to the labels."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("no labels")
    return float((predictions == labels).mean())


def majority_share(train_labels: Sequence[int], labels: Sequence[int]) -> float:
    """Accuracy on ``labels`` of always predicting train's most frequent label."""
    majority = int(np.bincount(np.asarray(train_labels)).argmax())
    return accuracy(np.full(len(labels), majority), labels)


def column_rms(x: sp.spmatrix) -> np.ndarray:
    """Root mean square of each column over the rows, (width,)."""
    return np.sqrt(np.asarray(x.multiply(x).mean(axis=0)).ravel())


@dataclass
class LogisticFit:
    """The fitted classifier on column-scaled features, and its L2 search."""

    model: LogisticRegression
    scale: np.ndarray  # (width,) applied to the features' columns before the model
    l2: float
    #: Per L2 tried: {"l2", "train_accuracy", "val_accuracy", "iterations"}.
    grid: list[dict[str, float]] = field(default_factory=list)

    def scaled(self, x: sp.spmatrix) -> sp.csr_matrix:
        return sp.csr_matrix(x @ sp.diags(self.scale))

    def decision_function(self, x: sp.spmatrix) -> np.ndarray:
        """The logits of raw (unscaled) features: (N, C), or (N,) for two classes."""
        return self.model.decision_function(self.scaled(x))

    def predict(self, x: sp.spmatrix) -> np.ndarray:
        """Most likely class of each row."""
        return self.model.predict(self.scaled(x))


def fit_logistic(
    train: sp.spmatrix,
    train_labels: Sequence[int],
    val: sp.spmatrix,
    val_labels: Sequence[int],
    l2_grid: Sequence[float] = L2_GRID,
    max_iter: int = 200,
) -> LogisticFit:
    """Multinomial logistic regression (scikit-learn, L-BFGS), L2 from ``l2_grid`` chosen by validation accuracy.

    The objective is the mean cross-entropy + l2/2·‖W‖² (the intercept is not penalised):
    scikit-learn's ``C`` is ``1 / (l2 · n_train)``. Columns are divided by their root mean square
    on train (columns absent from train are dropped), so that one L2 suits every feature set. The
    grid is walked from strong to weak L2, each fit starting from the previous one (``warm_start``);
    ties go to the stronger L2.
    """
    if not len(l2_grid):
        raise ValueError("l2_grid is empty")
    rms = column_rms(train)
    scale = np.divide(1.0, rms, out=np.zeros_like(rms), where=rms > 0)
    train_labels, val_labels = np.asarray(train_labels), np.asarray(val_labels)
    x_train = sp.csr_matrix(train @ sp.diags(scale))
    best: LogisticFit | None = None
    best_accuracy, grid = -1.0, []
    model = LogisticRegression(max_iter=max_iter, tol=1e-6, warm_start=True)
    for l2 in sorted(l2_grid, reverse=True):
        model.set_params(C=1.0 / (l2 * train.shape[0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is the budget: reported as iterations
            model.fit(x_train, train_labels)
        fit = LogisticFit(copy.deepcopy(model), scale, l2)  # the next warm-started fit leaves it alone
        record = {
            "l2": l2,
            "train_accuracy": accuracy(fit.predict(train), train_labels),
            "val_accuracy": accuracy(fit.predict(val), val_labels),
            "iterations": int(np.max(model.n_iter_)),
        }
        grid.append(record)
        if record["val_accuracy"] > best_accuracy:
            best, best_accuracy = fit, record["val_accuracy"]
    assert best is not None
    best.grid = grid
    return best


def first_operator(tokens: np.ndarray, operators: Sequence[int]) -> int:
    """The first token of ``tokens`` that is one of ``operators`` (-1 when there is none)."""
    hits = np.flatnonzero(np.isin(np.asarray(tokens), np.asarray(operators)))
    return int(np.asarray(tokens)[hits[0]]) if len(hits) else -1


class FirstOperatorClassifier:
    """ListOps without reading past the first operator: the train label most frequent for it.

    A first operator never seen on train (or a sequence without operators) gets train's most
    frequent label overall.
    """

    def __init__(self, operators: Sequence[int]) -> None:
        self.operators = list(operators)
        self.table: dict[int, int] = {}
        self.default = 0

    def fit(self, sequences: Sequence[np.ndarray], labels: Sequence[int]) -> FirstOperatorClassifier:
        """Learn the table from train sequences and labels."""
        labels = np.asarray(labels)
        firsts = np.array([first_operator(s, self.operators) for s in sequences])
        self.default = int(np.bincount(labels).argmax())
        self.table = {int(op): int(np.bincount(labels[firsts == op]).argmax()) for op in np.unique(firsts)}
        return self

    def predict(self, sequences: Sequence[np.ndarray]) -> np.ndarray:
        """One predicted label per sequence."""
        return np.array([self.table.get(first_operator(s, self.operators), self.default) for s in sequences])
