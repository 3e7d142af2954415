"""Shallow baselines: what a classifier gets without any attention between tokens.

Features are bags: the normalised token histogram (``unigram``) and the normalised histogram of
hashed adjacent-token pairs (``bigram``). Each is a :class:`SparseRows` matrix (one row per
sequence, rows summing to 1), fitted by multinomial logistic regression in torch
(:func:`fit_logistic`: full-batch L-BFGS, L2 chosen on the validation split). For two-document
tasks :func:`pair_rows` joins the two bags as ``[a, b, |a − b|, a ⊙ b]``. For ListOps,
:class:`FirstOperatorClassifier` predicts the label most frequent on train for each sequence's
first operator. ``scripts/baselines.py`` runs them on the training splits of every task.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "FEATURES",
    "L2_GRID",
    "FirstOperatorClassifier",
    "LogisticFit",
    "SparseRows",
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
_GOLDEN = np.uint64(2654435769)
#: The L2 values :func:`fit_logistic` tries by default (features scaled to unit RMS per column).
L2_GRID = (1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
#: Tokens per chunk when counting (bounds the temporary arrays).
_CHUNK_TOKENS = 4_000_000


@dataclass
class SparseRows:
    """A sparse (n_rows, width) float matrix in COO form, sorted by (row, column), no duplicates."""

    rows: np.ndarray  # int64 (nnz,)
    cols: np.ndarray  # int64 (nnz,)
    values: np.ndarray  # float32 (nnz,)
    n_rows: int
    width: int

    @property
    def nnz(self) -> int:
        return len(self.values)

    def keys(self) -> np.ndarray:
        """One int64 per entry, ordered as the entries: ``row * width + col``."""
        return self.rows * self.width + self.cols

    @classmethod
    def from_keys(cls, keys: np.ndarray, values: np.ndarray, n_rows: int, width: int) -> SparseRows:
        """Entries given as sorted unique keys ``row * width + col``."""
        return cls(keys // width, keys % width, values.astype(np.float32, copy=False), n_rows, width)

    def to_dense(self) -> torch.Tensor:
        """The (n_rows, width) float32 tensor (for small matrices and tests)."""
        dense = torch.zeros(self.n_rows, self.width)
        dense[torch.from_numpy(self.rows), torch.from_numpy(self.cols)] = torch.from_numpy(self.values)
        return dense

    def column_rms(self) -> np.ndarray:
        """Root mean square of each column over the rows (float64, (width,))."""
        squares = np.bincount(self.cols, weights=self.values.astype(np.float64) ** 2, minlength=self.width)
        return np.sqrt(squares / max(self.n_rows, 1))

    def scale_columns(self, scale: np.ndarray) -> SparseRows:
        """Column j multiplied by ``scale[j]``; entries that become 0 are dropped."""
        values = (self.values * scale[self.cols]).astype(np.float32)
        keep = values != 0
        return SparseRows(self.rows[keep], self.cols[keep], values[keep], self.n_rows, self.width)

    def bag(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(column indices, row offsets with the end, values) for ``F.embedding_bag``; cached."""
        cached = getattr(self, "_bag", None)
        if cached is None:
            offsets = np.zeros(self.n_rows + 1, dtype=np.int64)
            np.cumsum(np.bincount(self.rows, minlength=self.n_rows), out=offsets[1:])
            cached = (torch.from_numpy(self.cols), torch.from_numpy(offsets), torch.from_numpy(self.values))
            self._bag = cached
        return cached

    def transpose(self) -> SparseRows:
        """The (width, n_rows) transpose; cached."""
        cached = getattr(self, "_transpose", None)
        if cached is None:
            order = np.lexsort((self.rows, self.cols))
            cached = SparseRows(self.cols[order], self.rows[order], self.values[order], self.width, self.n_rows)
            self._transpose = cached
        return cached

    def matmul(self, weight: torch.Tensor) -> torch.Tensor:
        """``self @ weight`` for a dense (width, C) ``weight``, differentiable in ``weight``.

        The backward pass is ``selfᵀ @ grad``, a second sum-bag over the cached transpose (no
        per-step sort of the indices, as ``embedding_bag``'s own backward would do).
        """
        return _SparseMatmul.apply(weight, self)


def _sum_bag(x: SparseRows, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight`` without autograd."""
    cols, offsets, values = x.bag()
    return F.embedding_bag(
        cols, weight, offsets, mode="sum", per_sample_weights=values.to(weight.dtype), include_last_offset=True
    )


class _SparseMatmul(torch.autograd.Function):
    """``x @ weight`` with the gradient in ``weight`` taken through ``xᵀ``."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, x: SparseRows) -> torch.Tensor:
        ctx.x = x
        return _sum_bag(x, weight.detach())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _sum_bag(ctx.x.transpose(), grad.contiguous()), None


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
    hashed = (pair * _GOLDEN) & np.uint64(0xFFFFFFFF)
    return (hashed >> np.uint64(32 - bits)).astype(np.int64)


def count_rows(sequences: Sequence[np.ndarray], keys: Callable[[np.ndarray], np.ndarray], width: int) -> SparseRows:
    """Row i: the histogram of ``keys(sequences[i])`` over [0, width), divided by its total (L1 = 1).

    A sequence without keys (a bigram bag of one token) gives an empty row.
    """
    all_keys: list[np.ndarray] = []
    all_values: list[np.ndarray] = []
    start = 0
    while start < len(sequences):
        stop, tokens = start, 0
        while stop < len(sequences) and (stop == start or tokens + len(sequences[stop]) <= _CHUNK_TOKENS):
            tokens += len(sequences[stop])
            stop += 1
        per_doc = [keys(np.asarray(s)) for s in sequences[start:stop]]
        lengths = np.array([len(k) for k in per_doc], dtype=np.int64)
        if lengths.sum():
            doc = np.repeat(np.arange(start, stop, dtype=np.int64), lengths)
            unique, counts = np.unique(doc * width + np.concatenate(per_doc), return_counts=True)
            all_keys.append(unique)
            all_values.append(counts / lengths[unique // width - start])
        start = stop
    if not all_keys:
        return SparseRows.from_keys(np.zeros(0, np.int64), np.zeros(0, np.float32), len(sequences), width)
    return SparseRows.from_keys(np.concatenate(all_keys), np.concatenate(all_values), len(sequences), width)


def _elementwise(a: SparseRows, b: SparseRows) -> tuple[SparseRows, SparseRows]:
    """``|a − b|`` and ``a ⊙ b`` (same shapes)."""
    if (a.n_rows, a.width) != (b.n_rows, b.width):
        raise ValueError(f"shapes differ: {(a.n_rows, a.width)} and {(b.n_rows, b.width)}")
    ka, kb = a.keys(), b.keys()
    union, inverse = np.unique(np.concatenate([ka, kb]), return_inverse=True)
    diff = np.abs(np.bincount(inverse, weights=np.concatenate([a.values, -b.values]), minlength=len(union)))
    keep = diff > 0
    common, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    return (
        SparseRows.from_keys(union[keep], diff[keep], a.n_rows, a.width),
        SparseRows.from_keys(common, a.values[ia] * b.values[ib], a.n_rows, a.width),
    )


def _hstack(blocks: Sequence[SparseRows]) -> SparseRows:
    """Blocks with the same rows side by side."""
    n_rows = blocks[0].n_rows
    if any(block.n_rows != n_rows for block in blocks):
        raise ValueError("blocks have different numbers of rows")
    width = sum(block.width for block in blocks)
    shifts = np.cumsum([0] + [block.width for block in blocks[:-1]])
    keys = np.concatenate([block.rows * width + block.cols + shift for block, shift in zip(blocks, shifts)])
    values = np.concatenate([block.values for block in blocks])
    order = np.argsort(keys, kind="stable")
    return SparseRows.from_keys(keys[order], values[order], n_rows, width)


def pair_rows(a: SparseRows, b: SparseRows) -> SparseRows:
    """Features of two-document rows: ``[a, b, |a − b|, a ⊙ b]`` (width 4 × a's)."""
    difference, product = _elementwise(a, b)
    return _hstack([a, b, difference, product])


#: The feature sets of :func:`featurize`.
FEATURES = ("unigram", "bigram")


def featurize(sequences: Sequence, features: str, vocab_size: int, buckets: int = 2**18) -> SparseRows:
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


def accuracy(predictions: np.ndarray | torch.Tensor, labels: Sequence[int] | np.ndarray) -> float:
    """Share of predictions equal to the labels."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if len(labels) == 0:
        raise ValueError("no labels")
    return float((predictions == labels).mean())


def majority_share(train_labels: Sequence[int], labels: Sequence[int]) -> float:
    """Accuracy on ``labels`` of always predicting train's most frequent label."""
    majority = int(np.bincount(np.asarray(train_labels)).argmax())
    return accuracy(np.full(len(labels), majority), labels)


@dataclass
class LogisticFit:
    """A fitted multinomial logistic regression on column-scaled features, and its L2 search."""

    weight: torch.Tensor  # (width, C)
    bias: torch.Tensor  # (C,)
    scale: np.ndarray  # (width,) applied to the features' columns before the weight
    l2: float
    #: Per L2 tried: {"l2", "train_accuracy", "val_accuracy", "evaluations"}.
    grid: list[dict[str, float]] = field(default_factory=list)

    def logits(self, x: SparseRows) -> torch.Tensor:
        """(N, C) logits of raw (unscaled) features."""
        with torch.no_grad():
            return x.scale_columns(self.scale).matmul(self.weight) + self.bias

    def predict(self, x: SparseRows) -> np.ndarray:
        """Most likely class of each row."""
        return self.logits(x).argmax(1).numpy()


def _lbfgs(
    x: SparseRows, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, l2: float, max_iter: int
) -> int:
    """Minimise mean cross-entropy + l2/2·|W|² in place; returns the number of loss evaluations."""
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        evaluations += 1
        optimizer.zero_grad()
        loss = F.cross_entropy(x.matmul(weight) + bias, labels) + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weight.requires_grad_(False)
    bias.requires_grad_(False)
    return evaluations


def fit_logistic(
    train: SparseRows,
    train_labels: Sequence[int],
    val: SparseRows,
    val_labels: Sequence[int],
    num_classes: int,
    l2_grid: Sequence[float] = L2_GRID,
    max_iter: int = 200,
) -> LogisticFit:
    """Multinomial logistic regression, L2 from ``l2_grid`` chosen by validation accuracy.

    Columns are divided by their root mean square on train (columns absent from train are
    dropped), so that one L2 suits every feature set. The grid is walked from strong to weak
    L2, each fit starting from the previous one; ties go to the stronger L2.
    """
    rms = train.column_rms()
    scale = np.divide(1.0, rms, out=np.zeros_like(rms), where=rms > 0)
    x = train.scale_columns(scale)
    y = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    weight = torch.zeros(train.width, num_classes)
    bias = torch.zeros(num_classes)
    best: LogisticFit | None = None
    best_accuracy, grid = -1.0, []
    for l2 in sorted(l2_grid, reverse=True):
        evaluations = _lbfgs(x, y, weight, bias, l2, max_iter)
        fit = LogisticFit(weight.clone(), bias.clone(), scale, l2)
        record = {
            "l2": l2,
            "train_accuracy": accuracy(fit.predict(train), train_labels),
            "val_accuracy": accuracy(fit.predict(val), val_labels),
            "evaluations": evaluations,
        }
        grid.append(record)
        if record["val_accuracy"] > best_accuracy:
            best, best_accuracy = fit, record["val_accuracy"]
    if best is None:
        raise ValueError("l2_grid is empty")
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
