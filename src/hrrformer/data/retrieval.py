"""LRA's AAN document-matching task (``new_aan_pairs.{train,eval,test}.tsv``).

Each file has no header and five tab-separated, unquoted columns: label (``0``/``1``, possibly
written ``1.0``), id1, id2, text1, text2. Both documents are read as UTF-8 bytes + 1 (0 =
padding), each truncated to ``max_len`` (4,000). A document appearing in several pairs is
stored once (keyed by its id).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError, TaskData, TokenDataset
from .common import BYTE_VOCAB, BadInputs, Packed, PairSequences, check_options, decode_bytes, parse_label
from .files import iter_rows, require_path

__all__ = ["FILES", "MAX_LEN", "decode", "load"]

FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
MAX_LEN = 4000
decode = decode_bytes


class _Documents:
    """Documents collected across splits, each id stored once."""

    def __init__(self, max_len: int) -> None:
        self.max_len, self.texts, self.index = max_len, [], {}

    def add(self, doc_id: bytes, text: bytes) -> int:
        if doc_id and doc_id in self.index:
            return self.index[doc_id]
        self.texts.append(text[: self.max_len])
        if doc_id:
            self.index[doc_id] = len(self.texts) - 1
        return len(self.texts) - 1


def _read_split(file: Path, docs: _Documents, bad: BadInputs, limit: int | None) -> tuple[list, list, list]:
    a, b, labels = [], [], []
    for lineno, (label, id1, id2, text1, text2) in iter_rows(file, 5, bad):
        try:
            value = parse_label(label, 2)
        except ValueError as e:
            bad("malformed row", f"{file}:{lineno}: {e}")
            continue
        if not text1.strip() or not text2.strip():
            bad("empty document", f"{file}:{lineno}: empty document")
            continue
        a.append(docs.add(id1, text1))
        b.append(docs.add(id2, text2))
        labels.append(value)
        if limit is not None and len(labels) >= limit:
            break
    return a, b, labels


def load(
    path: str | Path,
    *,
    max_len: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    skip_bad: bool = False,
    limit: int | None = None,
) -> TaskData:
    """Load the three AAN splits from the folder ``path`` (``eval`` is the validation split).

    The files give every split, so ``seed`` and ``val_fraction`` are not used. ``limit``
    keeps the first ``limit`` rows of each file.
    """
    check_options(val_fraction=val_fraction, limit=limit)
    max_len = max_len or MAX_LEN
    folder = require_path(path, "a folder with " + ", ".join(FILES.values()))
    if not folder.is_dir():
        raise DataError(f"{folder}: expected a folder with {', '.join(FILES.values())}")
    bad, docs = BadInputs(skip_bad), _Documents(max_len)
    files = {split: require_path(folder / file, f"LRA's AAN {split} split") for split, file in FILES.items()}
    rows = {split: _read_split(file, docs, bad, limit) for split, file in files.items()}
    store = Packed.from_bytes(docs.texts)
    splits = {
        split: TokenDataset(PairSequences(store, np.array(a), np.array(b)), labels)
        for split, (a, b, labels) in rows.items()
    }
    return TaskData(
        name="retrieval",
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        vocab_size=BYTE_VOCAB,
        num_classes=2,
        max_len=max_len,
        pair=True,
        class_names=["unrelated", "related"],
        skipped=bad.counts,
        own_splits=tuple(FILES),
    )
