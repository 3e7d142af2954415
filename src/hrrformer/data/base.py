"""The one small interface every task shares: datasets of token sequences and a padding collate.

An item is ``(tokens, label)`` for single-sequence tasks and ``((tokens_a, tokens_b), label)``
for two-document tasks; tokens are 1-D integer tensors with 0 reserved for padding. The collate
pads to the longest sequence in the batch and returns the padding mask (True = padding).

Per-position tasks (MQAR) label positions instead of sequences: an item of a
:class:`PositionDataset` is ``(tokens, labels)`` with ``labels`` a 1-D integer tensor as long as
``tokens``, :data:`IGNORE_INDEX` (−100, ``F.cross_entropy``'s ``ignore_index``) where nothing is
asked; the collate pads the labels with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

__all__ = [
    "IGNORE_INDEX",
    "PAD_ID",
    "DataError",
    "PositionDataset",
    "TaskData",
    "TokenDataset",
    "collate",
    "pad_sequences",
]

PAD_ID = 0
#: The label of a position where nothing is asked (``F.cross_entropy``'s default ``ignore_index``).
IGNORE_INDEX = -100


class DataError(ValueError):
    """Bad or missing input data. The message names the file (and line) and what was expected."""


class TokenDataset(Dataset):
    """In-memory token sequences with integer labels.

    ``sequences[i]`` is a 1-D integer tensor (or a pair of them for two-document tasks),
    ``labels[i]`` an int in [0, num_classes). ``names[i]``, where the loader knows it, says
    where example i came from (a file path, or a member name inside an archive).
    """

    #: Whether each item has a label per position (:class:`PositionDataset`) instead of one.
    per_position = False

    def __init__(self, sequences: Sequence, labels: Sequence[int], names: Sequence[str] | None = None) -> None:
        if len(sequences) != len(labels):
            raise ValueError(f"{len(sequences)} sequences but {len(labels)} labels")
        if names is not None and len(names) != len(labels):
            raise ValueError(f"{len(names)} names but {len(labels)} labels")
        self.sequences, self.labels = sequences, self.stored_labels(labels)
        self.names = None if names is None else list(names)

    @staticmethod
    def stored_labels(labels: Sequence) -> Sequence:
        """How the labels are kept: one int per item, in a list."""
        return list(labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.sequences[index], self.labels[index]


class PositionDataset(TokenDataset):
    """Token sequences with a label per position: item i is ``(sequences[i], labels[i])``, both 1-D
    integer tensors of the same length, the labels in [0, num_classes) or :data:`IGNORE_INDEX`.

    ``labels`` is a sequence store like ``sequences`` (e.g. a ``Packed`` matrix), kept as it is."""

    per_position = True

    @staticmethod
    def stored_labels(labels: Sequence) -> Sequence:
        """The label store as it is (one tensor per item, read when an item is)."""
        return labels


@dataclass
class TaskData:
    """A task's splits and the facts a model needs about them.

    ``test`` is None where the data has no test split. ``skipped`` counts inputs dropped by
    ``skip_bad`` (by reason), for reports. ``own_splits`` names the splits the data defines
    itself (files, folders or a split column) and holds examples of; the others are held out
    by seed (val out of train, say) or absent. It is empty when the data has no split
    structure (a class-folder layout): every split is then held out by seed from one pool.
    """

    name: str
    train: Dataset
    val: Dataset
    test: Dataset | None
    vocab_size: int
    num_classes: int
    max_len: int
    pair: bool = False
    class_names: list[str] | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    own_splits: tuple[str, ...] = ()
    #: Labels per position (:class:`PositionDataset` splits, a model with ``pooling="none"``).
    per_position: bool = False
    #: The padding token id (None: every position is real), the model's ``pad_id``.
    pad_id: int | None = PAD_ID


def pad_sequences(
    sequences: Sequence[torch.Tensor],
    length: int | None = None,
    multiple: int = 1,
    cap: int | None = None,
    value: int = PAD_ID,
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-D integer tensors → tokens (B, L) padded with ``value`` (0) and mask (B, L), True = padding.

    L is ``length``, or the longest sequence rounded up to a ``multiple`` (at most ``cap``, but
    never below the longest sequence)."""
    if multiple < 1:
        raise ValueError(f"pad multiple must be ≥ 1, got {multiple}")
    if length is None:
        longest = max((len(s) for s in sequences), default=0)
        length = -(-longest // multiple) * multiple
        if cap is not None:
            length = max(min(length, cap), longest)
    length = max(length, 1)
    tokens = torch.full((len(sequences), length), value, dtype=torch.long)
    for i, s in enumerate(sequences):
        tokens[i, : len(s)] = torch.as_tensor(s[:length], dtype=torch.long)
    lengths = torch.tensor([min(len(s), length) for s in sequences])
    mask = torch.arange(length)[None, :] >= lengths[:, None]
    return tokens, mask


def collate(batch: Sequence[tuple], pad_multiple: int = 1, max_len: int | None = None) -> dict[str, torch.Tensor]:
    """List of items → {"tokens", "mask", "labels"} or, for pairs, {"tokens_a", "mask_a",
    "tokens_b", "mask_b", "labels"}; tokens (B, L) long, masks (B, L) bool, labels (B,) long,
    or (B, L) long for per-position labels (padded with :data:`IGNORE_INDEX`).

    L is the batch's longest sequence rounded up to ``pad_multiple`` (at most ``max_len``):
    few distinct shapes let the allocator reuse freed blocks (see ``hrrformer.batching``)."""
    sequences, labels = zip(*batch)
    out: dict[str, torch.Tensor] = {}
    pad = {"multiple": pad_multiple, "cap": max_len}
    if isinstance(sequences[0], tuple | list):
        out["tokens_a"], out["mask_a"] = pad_sequences([s[0] for s in sequences], **pad)
        out["tokens_b"], out["mask_b"] = pad_sequences([s[1] for s in sequences], **pad)
    else:
        out["tokens"], out["mask"] = pad_sequences(sequences, **pad)
    if isinstance(labels[0], torch.Tensor):  # a label per position: (B, L) like the tokens
        out["labels"] = pad_sequences(labels, length=out["tokens"].shape[1], value=IGNORE_INDEX)[0]
    else:
        out["labels"] = torch.tensor(labels, dtype=torch.long)
    return out
