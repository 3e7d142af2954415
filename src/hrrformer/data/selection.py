"""What to score in a task's data: one of its splits or every labelled example, with the labels
mapped by name to a trained run's classes (``hrrformer eval``, ``predict --data``, ``explain --average``).

A split the data lacks is a DataError naming the splits it has. ``"all"`` is every example of
every split, whatever the data's layout (a class-folder tree, a manifest without a ``split``
column, an ``aclImdb`` tree with only ``test/``, …).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import IGNORE_INDEX, DataError, PositionDataset, TaskData, TokenDataset
from .common import Gathered, choose

__all__ = ["SPLITS", "SPLIT_CHOICES", "default_split", "describe_splits", "map_to_classes", "select_split"]

SPLITS = ("train", "val", "test")
#: What ``--split`` accepts: a split, or ``all`` (every labelled example).
SPLIT_CHOICES = (*SPLITS, "all")


def split_sizes(data: TaskData) -> dict[str, int]:
    """Number of examples of each non-empty split, in the order train, val, test."""
    sizes = {split: len(getattr(data, split)) for split in SPLITS if getattr(data, split) is not None}
    return {split: n for split, n in sizes.items() if n}


def describe_splits(data: TaskData) -> str:
    """What the data holds, for messages: its splits with their sizes and how they were made."""
    sizes = split_sizes(data)
    if not sizes:
        return "no examples"
    parts = [f"{s} ({_examples(n)}{'' if s in data.own_splits else ', held out by seed'})" for s, n in sizes.items()]
    head = "" if data.own_splits else "no split structure of its own; "
    return f"{head}{', '.join(parts)}; all: {_examples(sum(sizes.values()))}"


def _examples(n: int) -> str:
    return f"{n:,} example{'' if n == 1 else 's'}"


def default_split(data: TaskData, *, own_data: bool, own_default: str) -> str:
    """The split used when none is asked for.

    On the run's own data (``own_data``) it is ``own_default``, so that val and test mean what
    they meant in training. Other data is scored whole when it has no split structure of its
    own (its splits would be drawn by seed), else on its test split (an error naming what it
    has when there is none).
    """
    if own_data:
        return own_default
    return "test" if data.own_splits else "all"


def gather(datasets: Sequence[TokenDataset], part: np.ndarray, index: np.ndarray) -> TokenDataset:
    """The examples ``datasets[part[i]][index[i]]`` as one dataset (sequences are not copied; nor
    are the labels of per-position datasets)."""
    sequences = Gathered([d.sequences for d in datasets], part, index)
    names = None
    if all(d.names is not None for d in datasets):
        names = [datasets[p].names[i] for p, i in zip(part.tolist(), index.tolist())]
    if datasets[0].per_position:
        return PositionDataset(sequences, Gathered([d.labels for d in datasets], part, index), names)
    labels = [datasets[p].labels[i] for p, i in zip(part.tolist(), index.tolist())]
    return TokenDataset(sequences, labels, names)


def select_split(data: TaskData, split: str, *, path: str | Path, limit: int | None = None, seed: int = 0):
    """The dataset of ``split`` (one of :data:`SPLIT_CHOICES`) of ``data``, read from ``path``.

    ``"all"`` joins every split (at most ``limit`` examples, a seeded sample). A split that is
    absent or empty is a DataError naming the splits the data has.
    """
    if split not in SPLIT_CHOICES:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLIT_CHOICES)}")
    sizes = split_sizes(data)
    if split != "all":
        if split not in sizes:
            choices = " or ".join([*sizes, "all"]) if sizes else "none"
            raise DataError(
                f"{path}: has no {split} split; it has {describe_splits(data)} (choose the split {choices})"
            )
        return getattr(data, split)
    if not sizes:
        raise DataError(f"{path}: no labelled examples")
    datasets = [getattr(data, s) for s in sizes]
    part = np.concatenate([np.full(len(d), k, dtype=np.int64) for k, d in enumerate(datasets)])
    index = np.concatenate([np.arange(len(d), dtype=np.int64) for d in datasets])
    if limit is not None and len(part) > limit:
        picked = np.sort(choose(np.arange(len(part)), limit, seed, "all"))
        part, index = part[picked], index[picked]
    return gather(datasets, part, index)


def map_to_classes(
    dataset: TokenDataset,
    data_classes: Sequence[str] | None,
    run_classes: Sequence[str] | None,
    num_classes: int,
    *,
    path: str | Path,
) -> TokenDataset:
    """``dataset`` with its labels as indices of the run's classes.

    Where the data names its classes (``data_classes``), labels are mapped by name: a subset of
    the run's classes is fine, a name the run does not know is a DataError naming it and listing
    the run's classes. Unnamed labels (integers) are kept, and must be below ``num_classes``; so
    must per-position labels (their positions with nothing asked aside).
    """
    run = list(run_classes) if run_classes else [str(i) for i in range(num_classes)]
    if dataset.per_position:
        if data_classes is not None:
            raise DataError(f"{path}: per-position labels are class indices, not names")
        largest = max((int(labels.max()) for labels in dataset.labels if len(labels)), default=IGNORE_INDEX)
        used = [] if largest == IGNORE_INDEX else [largest]  # the largest label asked for
    else:
        used = sorted(set(dataset.labels))
    if data_classes is None:
        outside = [label for label in used if not 0 <= label < num_classes]
        if outside:
            raise DataError(f"{path}: label {outside[0]} is not a class of the run (classes 0 … {num_classes - 1})")
        return dataset
    unknown = [data_classes[label] for label in used if data_classes[label] not in run]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise DataError(f"{path}: class {listed} is not one of the run's classes ({', '.join(run)})")
    index = {name: run.index(name) for name in data_classes if name in run}
    return TokenDataset(dataset.sequences, [index[data_classes[label]] for label in dataset.labels], dataset.names)
