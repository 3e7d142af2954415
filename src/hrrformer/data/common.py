"""Pieces every loader shares: compact token storage, seeded splits, bad-input accounting.

Tokens are stored compactly (one flat ``uint8`` buffer per split and an offsets array) and
turned into ``torch.long`` tensors, with the task's shift added (+1 for bytes and pixels, so
that 0 stays padding), only when an item is read.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from .base import DataError

__all__ = [
    "BYTE_VOCAB",
    "BadInputs",
    "Gathered",
    "LazyFiles",
    "Packed",
    "PairSequences",
    "ascii_image",
    "check_options",
    "choose",
    "decode_bytes",
    "parse_label",
    "rng_for",
    "shorten",
    "split_indices",
    "standard_splits",
]

#: Byte-level vocabulary: 0 = padding, byte b → b + 1.
BYTE_VOCAB = 257


class BadInputs:
    """Raise DataError for a bad example, or, with ``skip_bad``, count it by reason and go on."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.counts: dict[str, int] = {}

    def __call__(self, reason: str, message: str) -> None:
        """Report one bad example; returns only when it may be skipped."""
        if not self.skip_bad:
            raise DataError(f"{message} (pass skip_bad=True to skip such inputs)")
        self.counts[reason] = self.counts.get(reason, 0) + 1


class Packed(Sequence):
    """Many 1-D sequences in one flat numpy buffer; item i is a long tensor of ``values + shift``."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, shift: int = 0) -> None:
        self.flat, self.offsets, self.shift = flat, offsets, shift

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray], shift: int = 0, dtype=np.uint8) -> Packed:
        """Pack 1-D arrays (each cast to ``dtype``)."""
        lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.concatenate(arrays).astype(dtype, copy=False) if len(arrays) else np.zeros(0, dtype)
        return cls(flat, offsets, shift)

    @classmethod
    def from_bytes(cls, docs: Sequence[bytes], max_len: int | None = None) -> Packed:
        """Byte strings (truncated to ``max_len``) → tokens ``byte + 1``."""
        return cls.from_arrays([np.frombuffer(d[:max_len], dtype=np.uint8) for d in docs], shift=1)

    @classmethod
    def from_matrix(cls, rows: np.ndarray, shift: int = 0) -> Packed:
        """Equal-length sequences given as the rows of a 2-D array."""
        n, length = rows.shape
        return cls(np.ascontiguousarray(rows).reshape(-1), np.arange(n + 1, dtype=np.int64) * length, shift)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> torch.Tensor:
        index = _check_index(index, len(self))
        values = self.flat[self.offsets[index] : self.offsets[index + 1]].astype(np.int64)
        return torch.from_numpy(values) + self.shift

    def lengths(self) -> np.ndarray:
        """Length of every sequence."""
        return np.diff(self.offsets)


class PairSequences(Sequence):
    """Pairs of documents stored once: item i is ``(docs[a[i]], docs[b[i]])``."""

    def __init__(self, docs: Sequence[torch.Tensor], a: np.ndarray, b: np.ndarray) -> None:
        self.docs, self.a, self.b = docs, np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.a)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = _check_index(index, len(self))
        return self.docs[int(self.a[index])], self.docs[int(self.b[index])]

    def lengths(self) -> np.ndarray:
        """Combined length of each pair (a batching key), when the documents know theirs."""
        doc_lengths = getattr(self.docs, "lengths", None)
        if doc_lengths is None:
            raise AttributeError("lengths")
        per_doc = np.asarray(doc_lengths())
        return per_doc[self.a] + per_doc[self.b]


class Gathered(Sequence):
    """Items picked from several stores: item i is ``stores[part[i]][index[i]]`` (a concatenation
    or a subset of other sequence stores, nothing copied)."""

    def __init__(self, stores: Sequence[Sequence], part: np.ndarray, index: np.ndarray) -> None:
        self.stores = list(stores)
        self.part, self.index = np.asarray(part, dtype=np.int64), np.asarray(index, dtype=np.int64)
        if self.part.shape != self.index.shape:
            raise ValueError(f"{len(self.part)} store numbers but {len(self.index)} indices")

    def __len__(self) -> int:
        return len(self.part)

    def __getitem__(self, i: int):
        i = _check_index(i, len(self))
        return self.stores[int(self.part[i])][int(self.index[i])]

    def lengths(self) -> np.ndarray:
        """The picked items' lengths, when every store knows its own (AttributeError otherwise)."""
        per_store = []
        for store in self.stores:
            lengths = getattr(store, "lengths", None)
            if lengths is None:
                raise AttributeError("lengths")
            per_store.append(np.asarray(lengths(), dtype=np.int64))
        out = np.zeros(len(self), dtype=np.int64)
        for k, lengths in enumerate(per_store):
            picked = self.part == k
            out[picked] = lengths[self.index[picked]]
        return out


class LazyFiles(Sequence):
    """Files read when an item is requested: item i is ``reader(paths[i]) + shift`` as a long tensor.

    ``reader`` returns a 1-D numpy array; any failure (the file vanished, became unreadable,
    is corrupt or empty) is raised as DataError naming the file.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        reader: Callable[[Path], np.ndarray],
        shift: int = 0,
        max_len: int | None = None,
    ) -> None:
        self.paths, self.reader, self.shift, self.max_len = [str(p) for p in paths], reader, shift, max_len

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = Path(self.paths[_check_index(index, len(self))])
        try:
            values = self.reader(path)
        except DataError:
            raise
        except Exception as e:  # any reader failure becomes a DataError naming the file
            raise DataError(f"{path}: cannot read ({type(e).__name__}: {e})") from e
        if len(values) == 0:
            raise DataError(f"{path}: empty at read time")
        return torch.from_numpy(np.array(values, dtype=np.int64)) + self.shift

    def lengths(self) -> np.ndarray:
        """Each file's size on disk capped at ``max_len`` (a batching key; a compressed file's is
        its compressed size). Only for readers that take a prefix of the bytes (``max_len`` given)."""
        if self.max_len is None:
            raise AttributeError("lengths")
        sizes = []
        for path in self.paths:
            try:
                sizes.append(os.stat(path).st_size)
            except OSError:
                sizes.append(0)  # reported by __getitem__ when it is read
        return np.minimum(np.asarray(sizes, dtype=np.int64), self.max_len)


def _check_index(index: int, length: int) -> int:
    index = int(index)
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for {length} items")
    return index % length


def check_options(*, val_fraction: float, test_fraction: float = 0.0, limit: int | None = None) -> None:
    """Validate the split and limit arguments shared by every loader."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive integer or None, got {limit}")


def rng_for(seed: int, tag: str) -> np.random.Generator:
    """A generator for one purpose (``tag``), so that e.g. ``limit`` never changes which items are held out."""
    return np.random.default_rng([seed, *tag.encode()])


def split_indices(
    labels: Sequence[int], *, seed: int, val_fraction: float, test_fraction: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (train, val, test) of ``labels``, stratified: each label gives the same fractions.

    The three arrays are disjoint and together cover every index.
    """
    labels = np.asarray(labels, dtype=np.int64)
    rng = rng_for(seed, "split")
    parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val, n_test = _round(len(members) * val_fraction), _round(len(members) * test_fraction)
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
        parts[0].append(members[n_val + n_test :])
    empty = np.zeros(0, dtype=np.int64)
    train, val, test = (np.concatenate(p) if p else empty for p in parts)
    return train, val, test


def _round(x: float) -> int:
    """Round half up (Python's ``round`` sends 0.5 to 0)."""
    return int(np.floor(x + 0.5))


def choose(indices: np.ndarray, limit: int | None, seed: int, tag: str) -> np.ndarray:
    """``indices`` in a seeded random order, at most ``limit`` of them."""
    return rng_for(seed, f"choose-{tag}").permutation(np.asarray(indices, dtype=np.int64))[:limit]


def standard_splits(
    train_labels: Sequence[int],
    test_labels: Sequence[int] | None,
    *,
    seed: int,
    val_fraction: float,
    limit: int | None,
) -> dict[str, np.ndarray | None]:
    """The usual rule: val held out of train (stratified, seeded); test is the data's own test split.

    Returns index arrays ``train`` and ``val`` into the train pool and ``test`` into the test
    pool (None when there is none), each in seeded order and capped at ``limit``.
    """
    train, val, _ = split_indices(train_labels, seed=seed, val_fraction=val_fraction)
    test = None if test_labels is None else np.arange(len(test_labels))
    return {
        "train": choose(train, limit, seed, "train"),
        "val": choose(val, limit, seed, "val"),
        "test": None if test is None else choose(test, limit, seed, "test"),
    }


def shorten(text: bytes | str, limit: int = 40) -> str:
    """``repr`` of at most ``limit`` characters of ``text`` (bytes decoded with replacement), for
    messages about input that may be huge or binary; notes the full length when cut."""
    unit = "bytes" if isinstance(text, bytes) else "characters"
    length = len(text)
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", errors="replace")
    return repr(text[:limit]) + (f"… ({length:,} {unit})" if length > limit else "")


def parse_label(field: bytes | str, num_classes: int) -> int:
    """A class index written as an integer (``3``) or an integral float (``3.0``); ValueError otherwise."""
    text = (field.decode("ascii", errors="replace") if isinstance(field, bytes) else field).strip()
    try:
        if len(text) > 64:  # no number is this long; float() of a huge field would be slow
            raise ValueError
        value = float(text)
    except ValueError:
        raise ValueError(f"label {shorten(text)} is not a number") from None
    if not value.is_integer() or not 0 <= value < num_classes:
        raise ValueError(f"label {shorten(text)} is not an integer in [0, {num_classes})")
    return int(value)


def decode_bytes(tokens: Iterable[int], max_chars: int = 300) -> str:
    """Byte tokens (byte + 1, 0 = padding) → text, undecodable bytes replaced."""
    data = bytes(int(t) - 1 for t in tokens if int(t) > 0)
    text = data.decode("utf-8", errors="replace")
    return text if len(text) <= max_chars else text[:max_chars] + "…"


def ascii_image(tokens: Sequence[int], width: int | None = None, columns: int = 32) -> str:
    """Pixel tokens (value + 1) of a square (or ``width``-wide) image as a small ASCII picture."""
    values = np.asarray([int(t) for t in tokens], dtype=np.float64) - 1
    width = width or round(len(values) ** 0.5)
    if width < 1 or len(values) < width:
        return f"{len(values)} pixels"
    image = values[: len(values) // width * width].reshape(-1, width)
    step = max(1, width // columns)
    small = image[:: step * 2, ::step]  # characters are about twice as tall as wide
    ramp = " .:-=+*#%@"
    rows = ("".join(ramp[min(int(v / 256 * len(ramp)), len(ramp) - 1)] for v in row) for row in small)
    return "\n".join(rows)
