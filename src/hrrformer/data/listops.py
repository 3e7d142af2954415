"""ListOps from LRA's ``listops-1000`` files (``basic_{train,val,test}.tsv``, header ``Source\\tTarget``).

Preprocessing is LRA's: ``]`` becomes ``X``, parentheses are removed, tokens are split on
whitespace. The vocabulary is fixed: 0 = padding, 1–10 the digits 0–9, then ``[MIN``,
``[MAX``, ``[MED``, ``[SM`` and ``X`` (16 in all). Sequences longer than ``max_len`` (2,000)
are truncated. Labels are the expressions' values, 10 classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .base import DataError, TaskData, TokenDataset
from .common import BadInputs, Packed, check_options, parse_label, shorten
from .files import iter_rows, require_path

__all__ = ["FILES", "MAX_LEN", "VOCAB", "decode", "load", "tokenize"]

FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
MAX_LEN = 2000
NUM_CLASSES = 10
VOCAB = ("<pad>", *(str(d) for d in range(10)), "[MIN", "[MAX", "[MED", "[SM", "X")
_INDEX = {token.encode(): i for i, token in enumerate(VOCAB) if i}

# Fast path: operators become one control byte each, so that every valid token is one byte
# and a 256-entry table maps a whole row at once (255 = not a token).
_OPERATORS = {b"[MIN": b"\x01", b"[MAX": b"\x02", b"[MED": b"\x03", b"[SM": b"\x04"}
_TABLE = np.full(256, 255, dtype=np.uint8)
for _token, _id in _INDEX.items():
    _TABLE[ord(_OPERATORS.get(_token, _token))] = _id


def _preprocess(source: bytes) -> bytes:
    return source.replace(b"(", b"").replace(b")", b"").replace(b"]", b"X")


def tokenize(source: bytes) -> np.ndarray:
    """A ``Source`` field → token ids (uint8). ValueError naming the first unknown token."""
    text = _preprocess(source)
    if not any(control in text for control in _OPERATORS.values()):
        for operator, control in _OPERATORS.items():
            text = text.replace(operator, control)
        tokens = text.split()
        joined = b"".join(tokens)
        ids = _TABLE[np.frombuffer(joined, dtype=np.uint8)]
        if len(joined) == len(tokens) and not (ids == 255).any():
            return ids
    unknown = next(t for t in _preprocess(source).split() if t not in _INDEX)
    raise ValueError(f"unknown ListOps token {shorten(unknown)}")


def decode(tokens: Sequence[int]) -> str:
    """Token ids → the preprocessed text (``X`` closes an operator)."""
    return " ".join(VOCAB[int(t)] for t in tokens if 0 < int(t) < len(VOCAB))


def _read_split(file: Path, bad: BadInputs, max_len: int, limit: int | None) -> TokenDataset:
    sequences, labels = [], []
    for lineno, (source, target) in iter_rows(file, 2, bad, header=(b"Source", b"Target")):
        try:
            label = parse_label(target, NUM_CLASSES)
            ids = tokenize(source)
        except ValueError as e:
            bad("malformed row", f"{file}:{lineno}: {e}")
            continue
        if len(ids) == 0:
            bad("empty document", f"{file}:{lineno}: empty Source")
            continue
        sequences.append(ids[:max_len])
        labels.append(label)
        if limit is not None and len(labels) >= limit:
            break
    return TokenDataset(Packed.from_arrays(sequences), labels)


def load(
    path: str | Path,
    *,
    max_len: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    skip_bad: bool = False,
    limit: int | None = None,
) -> TaskData:
    """Load the three ListOps splits from the folder ``path``.

    LRA's files give every split, so ``seed`` and ``val_fraction`` are not used. ``limit``
    keeps the first ``limit`` rows of each file (LRA wrote them in random order). Malformed
    rows, bad labels and unknown tokens raise DataError with file and line, or with
    ``skip_bad`` are skipped and counted.
    """
    check_options(val_fraction=val_fraction, limit=limit)
    max_len = max_len or MAX_LEN
    folder = require_path(path, "a folder with " + ", ".join(FILES.values()))
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a folder with {', '.join(FILES.values())}")
    bad = BadInputs(skip_bad)
    files = {split: require_path(folder / file, f"LRA's ListOps {split} split") for split, file in FILES.items()}
    splits = {split: _read_split(file, bad, max_len, limit) for split, file in files.items()}
    return TaskData(
        name="listops",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        vocab_size=len(VOCAB),
        num_classes=NUM_CLASSES,
        max_len=max_len,
        class_names=[str(d) for d in range(NUM_CLASSES)],
        skipped=bad.counts,
        own_splits=tuple(FILES),
    )
